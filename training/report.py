"""The evolve run report: ``report.html`` and its PNG plots, from an evolve run's state.

Plots (matplotlib, headless): pass@1 per round on each evaluated suite and on the training tasks
(``success.png``); each round's paired gain over the incumbent per suite with its 95% bootstrap
interval (``paired.png``); the first attempt's and the final answer's accuracy
(``attempts.png``); with B-STaR, exploration, exploitation and balance against temperature
(``bstar.png``); the share of each role's calls that gave a usable answer in collection
(``roles.png``); mean reward per round and each training stage's loss before and after
(``rewards.png``); dataset sizes per method (``data.png``); time per stage (``time.png``). The
HTML page has the round table (per suite: greedy, sampled, pass@k, two attempts, the paired
difference, the gate's reason on its suite) and the training table.
"""

from __future__ import annotations

import html
from pathlib import Path
from typing import Any

PLOTS = ("success", "paired", "attempts", "roles", "rewards", "data", "time")  # and bstar.png with B-STaR


def _rounds(state: dict[str, Any]) -> list[int]:
    stages = state["stages"]
    return sorted({int(k.split("/")[0][1:]) for k in stages})


def _suites(state: dict[str, Any]) -> list[str]:
    """The evaluated suites' names, in the order of the run's config."""
    return [s["name"] for s in state["config"].get("suites", [])]


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

    # Pass@1 per round on each suite (each round's candidate; round 0 the starting policy): sampled
    # where the suite is sampled, else greedy with its 95% Wilson interval; and the training split.
    fig, ax = plt.subplots(figsize=(7, 4))
    for i, suite in enumerate(_suites(state)):
        pts = [(k, got) for k in rounds if (got := _stage(state, f"r{k}/eval/{suite}"))]
        if not pts:
            continue
        xs = [k for k, _ in pts]
        if all("sampled" in got for _, got in pts):
            ys = [got["sampled"]["pass_at_1"] for _, got in pts]
            ax.plot(xs, ys, marker="o", color=f"C{i}", label=f"{suite} (sampled pass@1)")
        else:
            ys = [got["greedy"]["pass_at_1"] for _, got in pts]
            lo = [y - got["greedy"]["ci95"][0] for y, (_, got) in zip(ys, pts, strict=True)]
            hi = [got["greedy"]["ci95"][1] - y for y, (_, got) in zip(ys, pts, strict=True)]
            ax.errorbar(xs, ys, yerr=[lo, hi], marker="o", capsize=4, color=f"C{i}", label=f"{suite} (greedy)")
    coll = [(k, got["success"]) for k in rounds if (got := _stage(state, f"r{k}/collect"))]
    if coll:
        ax.plot([p[0] for p in coll], [p[1] for p in coll], marker="s", linestyle=":", label="training tasks")
    promoted = [k for k in rounds if (_stage(state, f"r{k}/gate") or {}).get("promoted")]
    for k in promoted:
        ax.axvline(k, color="green", alpha=0.15, linewidth=8)
    ax.set(xlabel="round (shaded: promoted)", ylabel="pass@1", title="Pass@1 per round and suite")
    ax.set_xticks(rounds)
    ax.set_ylim(0, 1)
    ax.legend(fontsize=7)
    files.append(_save(fig, out / "success.png"))

    # The paired gain of each round's candidate over its incumbent, per suite, with its 95% interval.
    fig, ax = plt.subplots(figsize=(7, 4))
    for i, suite in enumerate(_suites(state)):
        marks: list[tuple[float, dict[str, Any]]] = []
        for k in rounds:
            per = ((_stage(state, f"r{k}/gate") or {}).get("paired") or {}).get(suite) or {}
            d = per.get("sampled") or per.get("greedy")
            if d:
                marks.append((k + (i - 2) * 0.06, d))
        if marks:
            ys = [d["mean"] for _, d in marks]
            err = [[d["mean"] - d["low"] for _, d in marks], [d["high"] - d["mean"] for _, d in marks]]
            ax.errorbar([x for x, _ in marks], ys, yerr=err, marker="o", capsize=3, linestyle="", label=suite)
    ax.axhline(0, color="grey", linewidth=1)
    ax.set(xlabel="round", ylabel="candidate − incumbent", title="Paired gain per suite (95% bootstrap CI)")
    ax.set_xticks(rounds)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=7)
    files.append(_save(fig, out / "paired.png"))

    # SCoRe's two-attempt numbers (greedy episodes) per suite: Acc@t1 and Acc@t2.
    fig, ax = plt.subplots(figsize=(7, 4))
    for i, suite in enumerate(_suites(state)):
        two = [
            (k, got["two_attempts"])
            for k in rounds
            if "two_attempts" in (got := _stage(state, f"r{k}/eval/{suite}") or {})
        ]
        if two:
            ax.plot([k for k, _ in two], [m["acc_t1"] for _, m in two], marker="o", linestyle=":", color=f"C{i}")
            ax.plot([k for k, _ in two], [m["acc_t2"] for _, m in two], marker="o", color=f"C{i}", label=suite)
    ax.set(xlabel="round", ylabel="accuracy", title="First attempt (dotted) and final answer (solid), greedy")
    ax.set_xticks(rounds)
    ax.set_ylim(0, 1)
    if ax.lines:
        ax.legend(fontsize=7)
    else:  # web suites: episodes submit nothing, so there are no attempts to count
        ax.text(0.5, 0.5, "no suite with submitted answers", ha="center", transform=ax.transAxes)
    files.append(_save(fig, out / "attempts.png"))

    # B-STaR's probe: exploration, exploitation and balance against temperature, one line per round.
    probes = [(k, got) for k in rounds if (got := _stage(state, f"r{k}/bstar"))]
    if probes:
        fig, axes = plt.subplots(1, 3, figsize=(12, 4))
        for k, got in probes:
            ts = [c["temperature"] for c in got["curves"]]
            th = f"{got['threshold']:g}"
            axes[0].plot(ts, [c["pass_at_n"] for c in got["curves"]], marker="o", label=f"round {k}")
            axes[1].plot(ts, [c["exploitation"][th] for c in got["curves"]], marker="o", label=f"round {k}")
            axes[2].plot(ts, [c["balance"][th] for c in got["curves"]], marker="o", label=f"round {k}")
            axes[2].plot([got["temperature"]], [got["score"]], marker="*", markersize=14, color="black")
        for a, title in zip(
            axes, ("exploration: pass@n", "exploitation: precision", "balance (star: chosen)"), strict=True
        ):
            a.set(xlabel="temperature", title=title, ylim=(0, 1.05))
            a.legend(fontsize=7)
        files.append(_save(fig, out / "bstar.png"))

    # Per role: the share of calls that gave a usable answer, in collection.
    fig, ax = plt.subplots(figsize=(7, 4))
    roles: dict[str, list[tuple[int, float]]] = {}
    for k in rounds:
        for role, v in (_stage(state, f"r{k}/collect") or {}).get("roles", {}).items():
            roles.setdefault(role, []).append((k, v["ok"] / max(1, v["calls"])))
    for role, calls in sorted(roles.items()):
        ax.plot([p[0] for p in calls], [p[1] for p in calls], marker="o", label=role)
    ax.set(xlabel="round", ylabel="calls without error", title="Per role: usable answers", ylim=(0, 1.05))
    ax.set_xticks(rounds)
    ax.legend(fontsize=8)
    files.append(_save(fig, out / "roles.png"))

    # Rewards and training losses.
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 4))
    for suite in _suites(state):
        pts = [(k, got["greedy"]["mean_reward"]) for k in rounds if (got := _stage(state, f"r{k}/eval/{suite}"))]
        if pts:
            left.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", label=f"{suite} (greedy)")
    pts = [(k, got["mean_reward"]) for k in rounds if (got := _stage(state, f"r{k}/collect"))]
    if pts:
        left.plot([p[0] for p in pts], [p[1] for p in pts], marker="s", linestyle=":", label="training tasks")
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


def _attempts(two: dict[str, Any]) -> str:
    """Acc@t1 → Acc@t2 with the wrong→right and right→wrong shares."""
    return (
        f"{_pct(two['acc_t1'])} → {_pct(two['acc_t2'])} (i→c {_pct(two['wrong_to_right'])}, "
        f"c→i {_pct(two['right_to_wrong'])})"
    )


def _overall(state: dict[str, Any]) -> str:
    """The final incumbent against round 0 on every suite (:func:`training.evolve.overall`)."""
    from training.evolve import overall

    k, per_suite = overall(state)
    if not per_suite:
        return ""
    e = html.escape
    rows = "".join(
        f"<tr><td>{e(name)}</td><td>{e(metric)}</td><td>{_pct(v['before'])} → {_pct(v['after'])}</td>"
        f"<td>{v['mean']:+.3f} [{v['low']:+.3f}, {v['high']:+.3f}] p={v['p_value']:.3f} (n={v['n']})</td></tr>"
        for name, per in per_suite.items()
        for metric, v in per.items()
    )
    return (
        f"<h2>Overall: round {k}'s policy against round 0</h2><p>The incumbent now (promoted in round {k}) "
        "against the starting policy, paired per task. The gate's suite chose the rounds, so its gain is "
        "biased upward; the others are not.</p><table><tr><th>suite</th><th>metric</th><th>pass@1</th>"
        f"<th>paired difference, 95% CI, one-sided p</th></tr>{rows}</table>"
    )


def write_report(state: dict[str, Any], out: Path) -> Path:
    """Write ``report.html`` and the plots into ``out``; the HTML's path."""
    out.mkdir(parents=True, exist_ok=True)
    images = plot(state, out)
    e = html.escape
    rows = []
    for k in _rounds(state):
        gate = _stage(state, f"r{k}/gate") or {}
        collect = _stage(state, f"r{k}/collect")
        for suite in _suites(state):
            ev = _stage(state, f"r{k}/eval/{suite}")
            if ev is None:
                continue
            g, sm, two = ev["greedy"], ev.get("sampled"), ev.get("two_attempts")  # none on web suites
            paired = (gate.get("paired") or {}).get(suite) or {}
            vs = "; ".join(
                f"{metric} {d['mean']:+.3f} [{d['low']:+.3f}, {d['high']:+.3f}] p={d['p_value']:.2f}"
                for metric, d in paired.items()
            )
            on_gate = suite == gate.get("suite") or "suite" not in gate  # a round not gated says why on each row
            verdict = e(gate.get("reason", "")) if k > 0 and on_gate else ""
            rows.append(
                f"<tr><td>{k}</td><td>{e(suite)}</td><td>{e(str(ev.get('model', '')))}</td>"
                f"<td>{g['successes']}/{ev['tasks_n']} = {_pct(g['pass_at_1'])} [{_pct(g['ci95'][0])}, {_pct(g['ci95'][1])}]</td>"
                f"<td>{_pct(sm['pass_at_1']) if sm else '–'}</td>"
                f"<td>{(_pct(sm['pass_at_k']) + ' (k=' + str(sm['k']) + ')') if sm else '–'}</td>"
                f"<td>{_attempts(two) if two else '–'}{('<br>sampled: ' + _attempts(sm['two_attempts'])) if sm and 'two_attempts' in sm else ''}"
                f"</td><td>{e(vs) or '–'}</td><td>{verdict}</td></tr>"
            )
        if collect is not None:
            rows.append(
                f"<tr><td>{k}</td><td>training tasks</td><td>{e(str(collect.get('model', '')))}</td>"
                f"<td colspan=6>collection: {collect['successes']}/{collect['episodes']} samples passed "
                f"({_pct(collect['success'])})</td></tr>"
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
                + (f": {wm['reason']}" if "reason" in wm else "")
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
<p>Status: {status}. Stage time so far: {total / 60:.1f} min. Rollout engine: {e(str(state.get("engine", "transformers")))}. Current policy: <b>{e(str(incumbent.get("model")))}</b>
{("; role adapters: " + e(", ".join(f"{r}={m}" for r, m in incumbent.get("roles", {}).items()))) if incumbent.get("roles") else ""}.</p>
<h2>Rounds</h2>
<p>Each round's candidate (round 0: the starting policy) on every suite: greedy pass@1 with its 95% Wilson
interval, sampled pass@1 and pass@k, the first attempt's and the final answer's accuracy (greedy; i→c: wrong then
right, c→i: right then wrong), and the paired per-task difference from the incumbent with its 95% bootstrap
interval and one-sided p-value. The gate decides on its suite alone; the others are reported, never chosen on.</p>
<table><tr><th>round</th><th>suite</th><th>policy</th><th>greedy pass@1</th><th>sampled pass@1</th><th>pass@k</th>
<th>Acc@t1 → Acc@t2</th><th>vs incumbent</th><th>gate</th></tr>
{"".join(rows)}</table>
{_overall(state)}
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
