"""The ``embodimem`` console script: ``info``, ``doctor``, ``bench <kind>``.

Each subcommand is a typed dataclass turned into flags by tyro; ``--config FILE.yaml`` loads a preset
from configs/ as the defaults, and flags override it. The resolved config is printed and saved.
"""

from __future__ import annotations

import shlex
import sys
from typing import Any, Callable

USAGE = """usage: embodimem <command> [flags]

commands:
  info                  version, registered memories / encoders / conditioners, backend summary
  doctor                per optional backend: installed or not, why, and how to fix
  bench memory [flags]  memory benchmark: throughput, latency, bytes, growth in T, batch scaling

`embodimem <command> --help` lists a command's flags; `--config configs/X.yaml` loads a preset."""


def _parse(cls: type, args: list[str], prog: str) -> Any:
    """tyro over ``cls``, with an optional ``--config preset.yaml`` providing the defaults."""
    import tyro

    from embodimem.config import load_yaml

    default = None
    if "--config" in args:
        i = args.index("--config")
        if i + 1 >= len(args):
            raise SystemExit(f"{prog}: --config needs a YAML path")
        default = load_yaml(cls, args[i + 1])
        args = args[:i] + args[i + 2:]
    return tyro.cli(cls, args=args, prog=prog, default=default)


def cmd_bench(args: list[str]) -> int:
    kinds: dict[str, Callable[[list[str]], int]] = {"memory": _bench_memory}
    if not args or args[0] not in kinds:
        print(f"usage: embodimem bench {{{','.join(kinds)}}} [flags]", file=sys.stderr)
        return 2
    return kinds[args[0]](args[1:])


def _bench_memory(args: list[str]) -> int:
    from embodimem.bench.memory import MemoryBenchConfig, run
    from embodimem.config import print_config, save_yaml

    cfg = _parse(MemoryBenchConfig, args, "embodimem bench memory")
    print_config(cfg, title="embodimem bench memory")
    cfg.out.mkdir(parents=True, exist_ok=True)
    save_yaml(cfg, cfg.out / "config.yaml")
    res = run(cfg, command="embodimem bench memory " + " ".join(shlex.quote(a) for a in args))
    print(format_memory_table(res))
    print(f"wrote {cfg.out / 'memory.json'}" + (f" and {cfg.out / 'memory.png'}" if cfg.plot else ""))
    return 0


def format_memory_table(res: dict[str, Any]) -> str:
    """A plain-text table of one memory benchmark result."""
    lines = [f"{'memory':<12}{'T':>7}{'B':>5}{'env-steps/s':>14}{'read p50 ms':>13}{'read p95 ms':>13}{'bytes/env':>12}"]
    for name, m in res["memories"].items():
        for r in m["rows"]:
            lines.append(f"{name:<12}{r['T']:>7}{r['B']:>5}{r['write_env_steps_per_s']:>14.0f}"
                         f"{r['read_ms_p50']:>13.3f}{r['read_ms_p95']:>13.3f}{r['bytes_per_env']:>12.0f}")
        for B, g in m["growth_in_T"].items():
            be, le = g["bytes_exponent"], g["read_latency_exponent"]
            lines.append(f"  {name} B={B}: growth exponent in T  bytes {_fmt(be)}  read latency {_fmt(le)}")
    return "\n".join(lines)


def _fmt(x: float | None) -> str:
    return "n/a" if x is None else f"{x:+.2f}"


def cmd_doctor(args: list[str]) -> int:
    from embodimem.doctor import format_report

    print(format_report())
    return 0


def cmd_info(args: list[str]) -> int:
    import embodimem
    from embodimem.memory import available_memories

    print(f"embodimem {embodimem.__version__}")
    print(f"memories:     {', '.join(available_memories())}")
    try:
        from embodimem.perception import available_encoders

        print(f"encoders:     {', '.join(available_encoders())}")
    except ImportError as e:  # pragma: no cover - only while perception is partially installed
        print(f"encoders:     unavailable ({e})")
    from embodimem.conditioning import available_conditioners

    print(f"conditioners: {', '.join(available_conditioners())}")
    print("backends:     run `embodimem doctor` for the full report")
    return 0


COMMANDS: dict[str, Callable[[list[str]], int]] = {"info": cmd_info, "doctor": cmd_doctor, "bench": cmd_bench}


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0] in ("-h", "--help"):
        print(USAGE)
        return 0 if argv else 2
    if argv[0] not in COMMANDS:
        print(f"embodimem: unknown command {argv[0]!r}; valid: {', '.join(COMMANDS)}\n\n{USAGE}", file=sys.stderr)
        return 2
    return COMMANDS[argv[0]](argv[1:])


if __name__ == "__main__":
    sys.exit(main())
