"""The context a stage runs in: the run directory, the stage contract, the splits and
prompts of a run, and the forward-pass cache the analyses share."""
