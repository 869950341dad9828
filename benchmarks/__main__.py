"""``python -m benchmarks [--quick] [--ops ...] [--backends ...] [--shapes ...] [--dtypes ...] [--out DIR [--resume]]``."""
from __future__ import annotations

import argparse
import datetime
import json
import sys
from pathlib import Path

import torch

from . import cases, report, runner

RESULTS = Path(__file__).resolve().parent / "results"


def _names(text: str | None) -> list[str] | None:
    return [n.strip() for n in text.split(",") if n.strip()] if text else None


def _read_cases(log: Path) -> dict[str, dict]:
    """{case id: row} of a resumable run's ``cases.jsonl`` (a line cut short by a kill is dropped)."""
    rows = {}
    if log.exists():
        for line in log.read_text().splitlines():
            try:
                item = json.loads(line)
            except json.JSONDecodeError:
                continue
            rows[item["id"]] = item["row"]
    return rows


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__)
    p.add_argument("--quick", action="store_true", help="tiny shapes, few repetitions (< 1 min on CPU)")
    p.add_argument("--ops", help=f"comma list of {list(cases.OP_MODES)}")
    p.add_argument("--modes", help=f"comma list of {list(cases.MODES)}")
    p.add_argument("--backends", help=f"comma list of {list(cases.BACKENDS)} (default: every available one)")
    p.add_argument("--shapes", help=f"comma list of shape names or groups {list(cases.GROUPS)}")
    p.add_argument("--dtypes", help=f"comma list of {list(cases.DTYPES)} (default bf16 on GPU, fp32 on CPU)")
    p.add_argument("--device", help="cuda or cpu (default: cuda when available)")
    p.add_argument("--full-size", action="store_true",
                   help="CPU: the paper shapes at their real size (for memory; the reference takes minutes)")
    p.add_argument("--threads", type=int, help="torch CPU threads (torch.set_num_threads; default: torch's)")
    p.add_argument("--out", type=Path, help="output folder (default benchmarks/results/<device>-<date>/)")
    p.add_argument("--no-errors", action="store_true", help="skip the float64 reference comparison")
    p.add_argument("--resume", action="store_true",
                   help="with --out: keep the cases already in OUT/cases.jsonl, run the rest (each case is appended "
                        "there as it finishes, so a run cut short keeps what it measured)")
    p.add_argument("--report-only", action="store_true",
                   help="with --resume: run nothing, write the results (json, markdown, plots) of OUT/cases.jsonl")
    p.add_argument("--list", action="store_true", help="print the cases and exit")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    return p.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    if args.threads is not None:
        if args.threads < 1:
            print(f"error: --threads must be >= 1, got {args.threads}", file=sys.stderr)
            return 2
        torch.set_num_threads(args.threads)
    try:
        todo = cases.build_cases(device, _names(args.ops), _names(args.backends), _names(args.shapes),
                                 _names(args.dtypes), _names(args.modes), quick=args.quick,
                                 full_size=args.full_size)
    except ValueError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    if args.list:
        print("\n".join(c.id for c in todo))
        return 0
    if not todo:
        print("error: no case matches the filters", file=sys.stderr)
        return 2
    slug = "cpu" if device.type == "cpu" else report.slug(runner.device_name(device))
    out = args.out or RESULTS / f"{slug}-{datetime.date.today().isoformat()}"
    if args.report_only and not args.resume:
        print("error: --report-only needs --resume --out DIR", file=sys.stderr)
        return 2
    if args.resume and args.out is None:
        print("error: --resume needs --out (the folder whose cases.jsonl it continues)", file=sys.stderr)
        return 2
    out.mkdir(parents=True, exist_ok=True)
    log = out / "cases.jsonl"
    done = _read_cases(log) if args.resume else {}
    if not args.resume:
        log.write_text("")
    todo = [] if args.report_only else [c for c in todo if c.id not in done]
    print(f"{len(todo)} cases to run, {len(done)} kept from {log}" if args.resume else f"{len(todo)} cases")

    def append(case_id: str, row: dict) -> None:
        with log.open("a") as f:
            f.write(json.dumps({"id": case_id, "row": row}) + "\n")

    data = runner.run(todo, device, quick=args.quick, check_errors=not args.no_errors,
                      progress=not args.no_progress, full_size=args.full_size, on_row=append)
    data["results"] = [row for case_id, row in done.items()] + data["results"]
    paths = report.write_all(data, out)
    failed = [r for r in data["results"] if r["status"] not in ("ok",) and not r["status"].startswith("unsupported")]
    print("\n".join(report.headline_table(data)))
    print(f"{len(data['results'])} cases ({len(failed)} failed) -> {paths['json'].parent}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
