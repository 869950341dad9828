"""Rewrite the config key table of docs/engine.md from the schema (hssn.engine.config.key_table).

    python tools/config_docs.py        # tests/test_configs.py fails while the table is stale
"""
from pathlib import Path

from hssn.engine.config import key_table

BEGIN, END = "<!-- config-keys:begin (python tools/config_docs.py) -->\n", "<!-- config-keys:end -->\n"

if __name__ == "__main__":
    doc = Path(__file__).resolve().parent.parent / "docs" / "engine.md"
    text = doc.read_text()
    head, rest = text.split(BEGIN)
    _, tail = rest.split(END)
    doc.write_text(head + BEGIN + key_table() + END + tail)
    print(f"wrote the config key table into {doc}")
