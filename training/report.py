"""The evolve run report: ``report.html`` and its PNG plots, from an evolve run's state.

Plots (matplotlib, headless): held-out and training-split success per round with 95% Wilson
intervals, one line per suite when there are several (``success.png``); the share of each
role's calls that gave a usable answer (``roles.png``); mean reward per round and each
training stage's loss before and after (``rewards.png``); dataset sizes per method
(``data.png``); time per stage (``time.png``). The HTML page has the round table (incumbent,
candidate, held-out success before and after, promoted or not) and the training table.
"""

from __future__ import annotations

import html
from pathlib import Path
from typing import Any

PLOTS = ("success", "roles", "rewards", "data", "time")


def _rounds(state: dict[str, Any]) -> list[int]:
    stages = state["stages"]
    return sorted({int(k.split("/")[0][1:]) for k in stages})


def _stage(state: dict[str, Any], key: str) -> dict[str, Any] | None:
    got = state["stages"].get(key)
    return got if isinstance(got, dict) else None


def _train_stages(state: dict[str, Any], k: int) -> list[tuple[str, dict[str, Any]]]:
    prefix = f"r{k}/train/"
    return [(key[len(prefix) :], v) for key, v in state["stages"].items() if key.startswith(prefix)]


def plot(state: dict[str, Any], out: Path) -> list[str]:
    """Write the PNG plots into ``out``; their file names."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rounds = _rounds(state)
    files = []

    # Success per round: held-out (each round's candidate; round 0 the starting policy) and training split.
    fig, ax = plt.subplots(figsize=(7, 4))
    for kind, label, marker in (("evaluate", "held-out", "o"), ("collect", "training split (sampled)", "s")):
        xs, ys, lo, hi = [], [], [], []
        suites: dict[str, list[tuple[int, float]]] = {}
        for k in rounds:
            got = _stage(state, f"r{k}/{kind}")
            if got is None:
                continue
            xs.append(k)
            ys.append(got["success"])
            lo.append(got["success"] - got["ci95"][0])
            hi.append(got["ci95"][1] - got["success"])
            for suite, v in got.get("suites", {}).items():
                suites.setdefault(suite, []).append((k, v["successes"] / max(1, v["episodes"])))
        if xs:
            ax.errorbar(xs, ys, yerr=[lo, hi], marker=marker, capsize=4, label=label)
        if len(suites) > 1:
            for suite, pts in suites.items():
                ax.plot([p[0] for p in pts], [p[1] for p in pts], linestyle=":", label=f"{label}: {suite}")
    promoted = [k for k in rounds if (_stage(state, f"r{k}/gate") or {}).get("promoted")]
    for k in promoted:
        ax.axvline(k, color="green", alpha=0.15, linewidth=8)
    ax.set(xlabel="round (shaded: promoted)", ylabel="success rate", title="Success per round (95% CI)")
    ax.set_xticks(rounds)
    ax.set_ylim(0, 1)
    ax.legend(fontsize=8)
    files.append(_save(fig, out / "success.png"))

    # Per role: the share of calls that gave a usable answer, in collection and evaluation.
    fig, ax = plt.subplots(figsize=(7, 4))
    for kind in ("collect", "evaluate"):
        roles: dict[str, list[tuple[int, float]]] = {}
        for k in rounds:
            got = _stage(state, f"r{k}/{kind}")
            for role, v in (got or {}).get("roles", {}).items():
                roles.setdefault(role, []).append((k, v["ok"] / max(1, v["calls"])))
        for role, pts in sorted(roles.items()):
            ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", label=f"{role} ({kind})")
    ax.set(xlabel="round", ylabel="calls without error", title="Per role: usable answers", ylim=(0, 1.05))
    ax.set_xticks(rounds)
    ax.legend(fontsize=8)
    files.append(_save(fig, out / "roles.png"))

    # Rewards and training losses.
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 4))
    for kind, label in (("evaluate", "held-out"), ("collect", "training split")):
        pts = [(k, got["mean_reward"]) for k in rounds if (got := _stage(state, f"r{k}/{kind}"))]
        if pts:
            left.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", label=label)
    left.set(xlabel="round", ylabel="mean reward", title="Reward per round", ylim=(0, 1))
    left.set_xticks(rounds)
    left.legend(fontsize=8)
    losses: dict[str, list[tuple[int, float, float]]] = {}
    for k in rounds:
        for tag, got in _train_stages(state, k):
            if got.get("loss_before") is not None and got.get("loss_after") is not None:
                losses.setdefault(tag, []).append((k, got["loss_before"], got["loss_after"]))
    for i, (tag, runs) in enumerate(sorted(losses.items())):
        for k, before, after in runs:
            right.plot([k - 0.2, k + 0.2], [before, after], marker="o", color=f"C{i}")
        right.plot([], [], color=f"C{i}", label=tag)
    right.set(xlabel="round", ylabel="loss on its data", title="Training loss, before → after")
    right.set_xticks(rounds)
    if losses:
        right.legend(fontsize=8)
    files.append(_save(fig, out / "rewards.png"))

    # Dataset sizes and time per stage.
    for name, what, ylabel in (("data", "examples", "rows"), ("time", "seconds", "seconds")):
        fig, ax = plt.subplots(figsize=(7, 4))
        bottoms = [0.0] * len(rounds)
        parts: dict[str, list[float]] = {}
        for i, k in enumerate(rounds):
            for key, got in state["stages"].items():
                if not key.startswith(f"r{k}/"):
                    continue
                part = key.split("/", 1)[1]
                if what == "examples" and not part.startswith("train/"):
                    continue
                parts.setdefault(part, [0.0] * len(rounds))[i] = float(got.get(what) or 0)
        for part, values in sorted(parts.items()):
            ax.bar(rounds, values, bottom=bottoms, label=part)
            bottoms = [b + v for b, v in zip(bottoms, values, strict=True)]
        title = "Training rows per round" if name == "data" else "Time per stage"
        ax.set(xlabel="round", ylabel=ylabel, title=title)
        ax.set_xticks(rounds)
        if parts:
            ax.legend(fontsize=8)
        files.append(_save(fig, out / f"{name}.png"))
    return files


def _save(fig: Any, path: Path) -> str:
    import matplotlib.pyplot as plt

    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path.name


def _pct(x: float | None) -> str:
    return "–" if x is None else f"{x:.1%}"


def write_report(state: dict[str, Any], out: Path) -> Path:
    """Write ``report.html`` and the plots into ``out``; the HTML's path."""
    out.mkdir(parents=True, exist_ok=True)
    images = plot(state, out)
    e = html.escape
    rows = []
    for k in _rounds(state):
        ev = _stage(state, f"r{k}/evaluate")
        gate = _stage(state, f"r{k}/gate") or {}
        collect = _stage(state, f"r{k}/collect")
        ci = f" [{_pct(ev['ci95'][0])}, {_pct(ev['ci95'][1])}]" if ev else ""
        verdict = "–" if k == 0 else ("promoted" if gate.get("promoted") else e(gate.get("reason", "refused")))
        if k > 0 and gate and not gate.get("promoted") and "after" in gate:
            verdict = "refused (regressed)"
        rows.append(
            f"<tr><td>{k}</td><td>{e(str((ev or {}).get('model', '')))}</td>"
            f"<td>{_pct(gate.get('before'))}</td><td>{_pct(ev['success'] if ev else None)}{ci}"
            f" ({(ev or {}).get('successes', 0)}/{(ev or {}).get('episodes', 0)})</td>"
            f"<td>{_pct(collect['success'] if collect else None)}</td><td>{verdict}</td></tr>"
        )
    train_rows = []
    for k in _rounds(state):
        for tag, got in _train_stages(state, k):
            loss = (
                f"{got['loss_before']:.3f} → {got['loss_after']:.3f}"
                if got.get("loss_before") is not None and got.get("loss_after") is not None
                else "–"
            )
            what = e(got.get("skipped", "")) or e(str(got.get("checkpoint")))
            train_rows.append(
                f"<tr><td>{k}</td><td>{e(tag)}</td><td>{what}</td><td>{got.get('examples', 0)}</td>"
                f"<td>{got.get('steps', 0)}</td><td>{loss}</td><td>{got.get('seconds', 0):.0f}</td></tr>"
            )
    extra_rows = []
    for k in _rounds(state):
        cur = _stage(state, f"r{k}/curriculum")
        if cur is not None:
            counts = ", ".join(
                f"{key} {cur[key]}"
                for key in ("failed_tasks", "written", "parsed", "new", "checkable", "feasible", "in_band", "kept")
                if key in cur
            )
            solved = f"; success on them {_pct(cur['success'])}" if "success" in cur else ""
            extra_rows.append(
                f"<tr><td>{k}</td><td>curriculum</td><td>{e(counts + solved)}{e(cur.get('reason', ''))}</td></tr>"
            )
        wm = _stage(state, f"r{k}/world_model")
        if wm is not None and "after" in wm:
            b, a = wm["before"], wm["after"]
            text = (
                f"next-observation accuracy {_pct(b['exact'])} → {_pct(a['exact'])}, line F1 "
                f"{b['line_f1']:.3f} → {a['line_f1']:.3f} on {a['transitions']:.0f} held-out transitions"
            )
            extra_rows.append(f"<tr><td>{k}</td><td>world model</td><td>{e(text)}</td></tr>")
        elif wm is not None:
            extra_rows.append(f"<tr><td>{k}</td><td>world model</td><td>{e(wm.get('skipped', ''))}</td></tr>")
    total = sum(float(v.get("seconds", 0)) for v in state["stages"].values())
    incumbent = state.get("incumbent", {})
    status = "finished" if state.get("finished") else f"in progress ({e(state.get('current', ''))})"
    page = f"""<!doctype html>
<html><head><meta charset="utf-8"><title>autodidact evolve {e(state["name"])}</title>
<style>body{{font-family:sans-serif;max-width:1000px;margin:2em auto}}table{{border-collapse:collapse}}
td,th{{border:1px solid #ccc;padding:4px 8px;text-align:left}}img{{max-width:100%}}</style></head><body>
<h1>autodidact evolve: {e(state["name"])}</h1>
<p>Status: {status}. Stage time so far: {total / 60:.1f} min. Current policy: <b>{e(str(incumbent.get("model")))}</b>
{("; role adapters: " + e(", ".join(f"{r}={m}" for r, m in incumbent.get("roles", {}).items()))) if incumbent.get("roles") else ""}.</p>
<h2>Rounds</h2>
<p>Held-out success of each round's candidate (round 0: the starting policy), with its 95% Wilson interval;
"before" is the incumbent's held-out success it had to match. Training-split success is of the sampled collection.</p>
<table><tr><th>round</th><th>evaluated policy</th><th>held-out before</th><th>held-out after</th>
<th>training split</th><th>gate</th></tr>
{"".join(rows)}</table>
<h2>Training</h2>
<table><tr><th>round</th><th>stage</th><th>checkpoint</th><th>rows</th><th>steps</th><th>loss</th><th>seconds</th></tr>
{"".join(train_rows)}</table>
{"<h2>Curriculum and world model</h2><table><tr><th>round</th><th>part</th><th>result</th></tr>" + "".join(extra_rows) + "</table>" if extra_rows else ""}
<h2>Plots</h2>
{"".join(f'<p><img src="{e(i)}" alt="{e(i)}"></p>' for i in images)}
<h2>Config</h2><pre>{e(_yaml(state["config"]))}</pre>
</body></html>
"""
    path = out / "report.html"
    path.write_text(page)
    return path


def _yaml(data: Any) -> str:
    import yaml

    return str(yaml.safe_dump(data, sort_keys=False))
