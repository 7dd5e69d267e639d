"""mkdocs hook (mkdocs.yml `hooks:`): the manual's settings tables, generated from the code.

A page line `<!-- settings: NAME -->` becomes the table of a stage's settings (NAME: a
stage, e.g. `evaluate`; `common`: the fields every stage has) or of a training-config
table (`config.model`, `config.train`, `config.data`: a study file's `[model]`, `[train]`,
`[data]`). The
defaults and help texts live once, in the settings dataclasses; a table written by hand
would drift from them. An unknown NAME fails the build.
"""

from __future__ import annotations

import dataclasses
import inspect
import json
import re
from typing import Any

from mkdocs.exceptions import PluginError

MARKER = re.compile(r"^<!-- settings: ([\w.-]+) -->$", re.M)
COMMON = ("device", "threads", "data_dir", "offline")  # every stage's (StageSettings)


def on_page_markdown(markdown: str, **_: Any) -> str:
    return MARKER.sub(lambda m: table(m.group(1)), markdown)


def table(name: str) -> str:
    from domaingpt.core import config
    from domaingpt.study.pipeline import BUILTIN_STAGES, REPORT

    specs = {
        "config.model": config.ModelSpec,
        "config.train": config.TrainSpec,
        "config.data": config.DataSpec,
    }
    if name in specs:
        return config_table(specs[name])
    stages = {s.name: s for s in (*BUILTIN_STAGES, REPORT)}
    if name == "common":
        return settings_table(stages["stats"].settings, only=COMMON)
    if name not in stages:
        renamed = next((s.name for s in stages.values() if name in s.aliases), None)
        if renamed:  # the manual names each stage once, by its current name
            raise PluginError(f"<!-- settings: {name} -->: {name} is now {renamed}; write that")
        raise PluginError(f"<!-- settings: {name} -->: no such stage or table")
    return settings_table(stages[name].settings, skip=COMMON)


def settings_table(cls: type, *, only: tuple[str, ...] = (), skip: tuple[str, ...] = ()) -> str:
    rows = ["| key | default | option | what |", "| --- | --- | --- | --- |"]
    for f in dataclasses.fields(cls):
        if f.name.startswith("_") or "help" not in f.metadata:
            continue
        if (only and f.name not in only) or f.name in skip:
            continue
        meta = f.metadata
        option = "study file / Python only"
        if meta["cli"]:
            flag = meta["flag"] or "--" + f.name.replace("_", "-")
            option = f"`{flag}`" if flag.startswith("-") else f"`{flag}` (positional)"
        rows.append(f"| `{f.name}` | {default(f)} | {option} | {cell(meta['help'])} |")
    return "\n".join(rows)


def config_table(cls: type) -> str:
    notes = comments(cls)
    rows = ["| key | default | what |", "| --- | --- | --- |"]
    for f in dataclasses.fields(cls):
        rows.append(f"| `{f.name}` | {default(f)} | {cell(notes.get(f.name, ''))} |")
    return "\n".join(rows)


def comments(cls: type) -> dict[str, str]:
    """Each field's comment in the class source: the lines above it and its line's tail."""
    notes: dict[str, str] = {}
    above: list[str] = []
    for line in inspect.getsource(cls).splitlines():
        text = line.strip()
        if text.startswith("#"):
            above.append(text.lstrip("# "))
            continue
        field = re.match(r"(\w+)\s*:[^=]*=[^#]*(?:#\s*(.*))?$", text)
        if field:
            parts = [*above, field.group(2) or ""]
            notes[field.group(1)] = " ".join(p for p in parts if p)
        above = []
    return notes


def default(f: dataclasses.Field) -> str:
    if f.default is not dataclasses.MISSING:
        value = f.default
    elif f.default_factory is not dataclasses.MISSING:
        value = f.default_factory()
    else:
        return "(required)"
    if value is None:
        return "unset"
    return cell(f"`{json.dumps(value, ensure_ascii=False)}`")


def cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")
