#!/usr/bin/python3
"""A study's curves from Python, notebook style: the validation curve of the
best lr at every batch size, against samples seen, one panel per optimizer,
with the target drawn in.

    PYTHONPATH=build/clients/python/package /usr/bin/python3 \\
        experiments/plot_study.py --server 127.0.0.1:50051 --sweep 1 --out curves.png

Needs Debian's python3-grpcio, python3-protobuf, python3-pandas and
python3-matplotlib (scripts/install_deps.sh installs them); without PYTHONPATH once the
client is installed (docs/api.md, "Python client").
"""
import argparse

import matplotlib

matplotlib.use("Agg")  # files, no display
import matplotlib.pyplot as plt  # noqa: E402

import megabatch_client as mb  # noqa: E402


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--server", default="127.0.0.1:50051")
    ap.add_argument("--token-file")
    ap.add_argument("--sweep", type=int, required=True)
    ap.add_argument("--out", default="curves.png")
    args = ap.parse_args()

    # %% The report says which lr was best at each batch size.
    client = mb.connect(args.server, token_file=args.token_file)
    report = client.report_dataframe(args.sweep)
    metric = report["target_metric"] or "val_accuracy"
    best = report["rows"][["optimizer", "batch_size", "best_lr"]]

    # %% Every evaluation of every trial, joined with its trial's settings.
    curves = client.export_dataframe(args.sweep, [metric])
    curves["samples"] = curves["step"] * curves["batch_size"]
    curves = curves.merge(best, left_on=["optimizer", "batch_size", "lr"],
                          right_on=["optimizer", "batch_size", "best_lr"])
    # Seeds of the best lr averaged at each evaluation.
    mean = curves.groupby(["optimizer", "batch_size", "samples"], as_index=False)["value"].mean()

    # %% One panel per optimizer, one line per batch size.
    optimizers = list(dict.fromkeys(best["optimizer"]))
    fig, axes = plt.subplots(1, len(optimizers), figsize=(5 * len(optimizers), 4), sharey=True,
                             squeeze=False)
    for ax, optimizer in zip(axes[0], optimizers):
        mine = mean[mean["optimizer"] == optimizer]
        for batch, line in mine.groupby("batch_size"):
            ax.plot(line["samples"], line["value"], label=f"b={batch}")
        if report["target_value"] is not None:
            ax.axhline(report["target_value"], color="gray", linestyle="--", linewidth=1)
        ax.set_xscale("symlog", linthresh=1e4)
        ax.set_xlim(left=0)
        ax.set_title(f"{optimizer}: best lr per batch size")
        ax.set_xlabel("samples seen")
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel(metric)
    axes[0][-1].legend(fontsize=8)
    fig.suptitle(f"sweep {args.sweep} '{report['sweep']['name']}'")
    fig.tight_layout()
    fig.savefig(args.out, dpi=100)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
