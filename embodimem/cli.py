"""The ``embodimem`` console script: ``info``, ``doctor``, ``bench <kind>``.

Each subcommand is a typed dataclass turned into flags by tyro; ``--config FILE.yaml`` loads a preset
from configs/ as the defaults, and flags override it. The resolved config is printed and saved.
"""

from __future__ import annotations

import os
import shlex
import sys
from typing import Callable

USAGE = """usage: embodimem <command> [flags]

commands:
  info                  version, registered memories / encoders / conditioners, backend summary
  doctor                per optional backend: installed or not, why, and how to fix
  train [flags]         PPO with any registered memory (torchrun-ready); writes a run directory
  eval [flags]          evaluate a run: per_episode.jsonl, summary.json (95% intervals), videos
  probe [flags]         does a run's policy carry the cue to the decision point (linear probes), and use it?
  plot [flags]          learning curves, mean and 95% interval over seeds, grouped by memory
  bench <kind> [flags]  benchmarks: memory (throughput, latency, bytes, growth in T, batch scaling),
                        attention (hcam vs full attention), video-banks (batched vs per-stream lists),
                        spatial (octree / point-frame vs open3d), envs (simulator steps/s)

`embodimem <command> --help` lists a command's flags; `--config configs/X.yaml` loads a preset."""


def _parse(cls: type, args: list[str], prog: str) -> object:
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
    """``bench <kind> [flags]``: parse the kind's Config, save it, run, print the table."""
    from embodimem.bench import BENCHES, bench_module
    from embodimem.config import print_config, save_yaml

    if not args or args[0] not in BENCHES:
        print(f"usage: embodimem bench {{{','.join(BENCHES)}}} [flags]", file=sys.stderr)
        return 2
    kind, rest = args[0], args[1:]
    mod = bench_module(kind)
    cfg = _parse(mod.Config, rest, f"embodimem bench {kind}")
    print_config(cfg, title=f"embodimem bench {kind}")
    cfg.out.mkdir(parents=True, exist_ok=True)
    save_yaml(cfg, cfg.out / "config.yaml")
    res = mod.run(cfg, command=f"embodimem bench {kind} " + " ".join(shlex.quote(a) for a in rest))
    print(mod.format_table(res))
    print(f"results in {cfg.out}/")
    return 0


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


def cmd_train(args: list[str]) -> int:
    """PPO with a memory policy (runs under torchrun too)."""
    from embodimem.agents.ppo.config import TrainConfig
    from embodimem.agents.ppo.train import train

    res = train(_parse(TrainConfig, args, "embodimem train"))
    print({k: (round(v, 4) if isinstance(v, float) else v) for k, v in res.items()})
    return 0


def cmd_eval(args: list[str]) -> int:
    """Evaluate a training run's checkpoint; prints the summary."""
    import json

    from embodimem.agents.ppo.config import EvalConfig
    from embodimem.agents.ppo.evaluate import evaluate

    print(json.dumps(evaluate(_parse(EvalConfig, args, "embodimem eval")), indent=2))
    return 0


def cmd_probe(args: list[str]) -> int:
    """Linear cue probes at a MiniWorld task's decision point; prints the result."""
    import json

    from embodimem.agents.ppo.probe import ProbeConfig, probe

    print(json.dumps(probe(_parse(ProbeConfig, args, "embodimem probe")), indent=2))
    return 0


def cmd_plot(args: list[str]) -> int:
    """Learning curves (mean and 95% interval over seeds) from run directories."""
    from embodimem.plotting import PlotConfig, plot

    print(f"wrote {plot(_parse(PlotConfig, args, 'embodimem plot'))}")
    return 0


COMMANDS: dict[str, Callable[[list[str]], int]] = {
    "info": cmd_info, "doctor": cmd_doctor, "bench": cmd_bench, "train": cmd_train, "eval": cmd_eval, "probe": cmd_probe,
    "plot": cmd_plot,
}


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0] in ("-h", "--help"):
        print(USAGE)
        return 0 if argv else 2
    if argv[0] not in COMMANDS:
        print(f"embodimem: unknown command {argv[0]!r}; valid: {', '.join(COMMANDS)}\n\n{USAGE}", file=sys.stderr)
        return 2
    try:
        return COMMANDS[argv[0]](argv[1:])
    except (ValueError, FileNotFoundError, FileExistsError) as e:
        # bad input (unknown names, missing runs, incompatible checkpoints): the message names the problem;
        # EMBODIMEM_DEBUG=1 shows the traceback
        if os.environ.get("EMBODIMEM_DEBUG"):
            raise
        print(f"embodimem {argv[0]}: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
