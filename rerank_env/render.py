"""What the environments' ``render()`` returns: a text or an image of one request.

Both show the request (its user, the candidates in the upstream ranker's order),
the slate so far and each placed slot's click probability under the training
simulator (``p_t``, what the dense reward pays):

* :func:`slate_text` (``render_mode="ansi"``): one line per slot;
* :func:`slate_image` (``render_mode="rgb_array"``): an RGB array of fixed size,
  drawn with matplotlib's Agg canvas (no window, no pyplot state). Left: the
  candidates' upstream scores in their initial order, placed ones coloured by
  slot; right: one bar per slot, its length the click probability, labelled with
  the item's title. The size is the same at every step, as video recorders
  (``gymnasium.wrappers.RecordVideo``) need.
"""

from __future__ import annotations

import numpy as np

from rerank_env.core import EpisodeBatch

#: ``render_mode="rgb_array"`` frames are ``[IMAGE_HEIGHT, IMAGE_WIDTH, 3]`` uint8.
IMAGE_WIDTH, IMAGE_HEIGHT = 800, 400
_DPI = 100
#: Characters of an item's title shown in a slot's label.
_TITLE_CHARS = 34


def _header(episodes: EpisodeBatch) -> str:
    request = int(episodes.request[0])
    user = int(episodes.task.pool.request_user[request])
    return f"request {request} (user {user})"


def slate_text(episodes: EpisodeBatch) -> str:
    """The request and its slate so far, one line per slot (``render_mode="ansi"``)."""
    if not episodes.active and episodes.t == 0:
        return "SlateRerank: call reset() first\n"
    titles = episodes.task.pool.item_titles
    lines = [_header(episodes)]
    for slot in range(episodes.task.slate_length):
        if slot < episodes.t:
            position = int(episodes.slate[0, slot])
            item = int(episodes.candidate_items[0, position])
            probability = episodes.probs[0, slot]
            lines.append(
                f"  {slot + 1}. [{position:2d}] {titles[item]}  p(click) = {probability:.3f}"
            )
        else:
            lines.append(f"  {slot + 1}. -")
    return "\n".join(lines) + "\n"


def slate_image(episodes: EpisodeBatch) -> np.ndarray:
    """The request and its slate so far as RGB uint8 ``[IMAGE_HEIGHT, IMAGE_WIDTH, 3]``."""
    # Imported here: matplotlib costs an environment nothing until it renders.
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    task = episodes.task
    n, length = task.num_candidates, task.slate_length
    figure = Figure(figsize=(IMAGE_WIDTH / _DPI, IMAGE_HEIGHT / _DPI), dpi=_DPI)
    canvas = FigureCanvasAgg(figure)
    started = episodes.active or episodes.t > 0
    placed = int(episodes.t) if started else 0
    colours = _slot_colours(length)
    clicks = float(episodes.probs[0, :placed].sum())
    figure.suptitle(
        (f"{_header(episodes)}: {placed}/{length} slots filled, expected clicks {clicks:.3f}")
        if started
        else "call reset() first",
        fontsize=11,
    )
    grid = figure.add_gridspec(
        1, 2, width_ratios=(1, 1.25), left=0.07, right=0.98, bottom=0.13, top=0.84, wspace=0.08
    )

    candidates = figure.add_subplot(grid[0])
    scores = episodes.candidate_scores[0] if started else np.zeros(n)
    bar_colours = np.tile(np.array([0.78, 0.78, 0.78, 1.0]), (n, 1))
    for slot in range(placed):
        bar_colours[episodes.slate[0, slot]] = colours[slot]
    candidates.bar(np.arange(n), scores, color=bar_colours, width=0.85)
    for slot in range(placed):
        position = int(episodes.slate[0, slot])
        candidates.annotate(
            str(slot + 1),
            (position, scores[position]),
            ha="center",
            va="bottom",
            fontsize=8,
            xytext=(0, 1),
            textcoords="offset points",
        )
    candidates.set_title(f"{n} candidates (upstream order)", fontsize=9)
    candidates.set_xlabel("candidate position", fontsize=8)
    candidates.set_ylabel("upstream score", fontsize=8)
    candidates.set_xlim(-1, n)
    candidates.tick_params(labelsize=7)

    slate = figure.add_subplot(grid[1])
    probabilities = np.zeros(length)
    probabilities[:placed] = episodes.probs[0, :placed]
    slate.barh(np.arange(length), probabilities, color=colours, height=0.7)
    titles = task.pool.item_titles
    for slot in range(length):
        if slot < placed:
            position = int(episodes.slate[0, slot])
            title = str(titles[int(episodes.candidate_items[0, position])])
            if len(title) > _TITLE_CHARS:
                title = title[: _TITLE_CHARS - 1] + "…"
            label = f"[{position}] {title}  {probabilities[slot]:.3f}"
        else:
            label = "(empty)"
        slate.text(0.01, slot, label, va="center", fontsize=8)
    slate.set_yticks(np.arange(length), [f"{slot + 1}" for slot in range(length)], fontsize=8)
    slate.set_ylim(length - 0.5, -0.5)  # slot 1 on top
    slate.set_xlim(0, 1)
    slate.set_title("slate: p(click) per slot, training simulator", fontsize=9)
    slate.set_xlabel("click probability", fontsize=8)
    slate.tick_params(axis="x", labelsize=7)

    canvas.draw()
    return np.asarray(canvas.buffer_rgba())[..., :3].copy()


def _slot_colours(length: int) -> np.ndarray:
    """One RGBA colour per slot, light enough to read a black label on."""
    from matplotlib import colormaps

    return colormaps["Set3"](np.arange(length) % 12)
