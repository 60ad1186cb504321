"""The report's figures, drawn with matplotlib (the `plots` extra) from small aggregated data.

One style for all: Okabe-Ito colours (distinguishable with the common colour-vision deficiencies),
ColorBrewer's RdBu for signed matrices, 11-13 pt text, titles, axis labels with units. Figures are
built on `matplotlib.figure.Figure` (no pyplot state), so drawing needs no display and no backend.
"""

from __future__ import annotations

import io
import xml.etree.ElementTree as ET
from dataclasses import dataclass

import numpy as np
from matplotlib import patheffects, rcParams
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

# Okabe & Ito (2008), "Color Universal Design": orange, sky blue, bluish green, yellow, blue, vermillion,
# reddish purple, black.
OKABE_ITO = ("#E69F00", "#56B4E9", "#009E73", "#F0E442", "#0072B2", "#D55E00", "#CC79A7", "#000000")
GREY = "#9A9A9A"
DIVERGING = "RdBu_r"  # ColorBrewer RdBu: safe for colour-blind readers; red = positive
PNG_DPI = 100

rcParams.update({
    "font.size": 11, "axes.titlesize": 13, "axes.titleweight": "bold", "axes.labelsize": 11,
    "xtick.labelsize": 10, "ytick.labelsize": 10, "legend.fontsize": 10, "figure.titlesize": 14,
    "axes.spines.top": False, "axes.spines.right": False, "axes.grid": True, "grid.color": "#E5E5E5",
    "grid.linewidth": 0.8, "axes.axisbelow": True, "svg.fonttype": "none", "svg.hashsalt": "mfspark-report",
})
SVG_NS = "http://www.w3.org/2000/svg"
ET.register_namespace("", SVG_NS)
ET.register_namespace("xlink", "http://www.w3.org/1999/xlink")


@dataclass
class Drawn:
    """One figure: its file stem, caption, PNG bytes and (for figures with hover titles) inline SVG."""

    name: str
    caption: str
    png: bytes
    svg: str | None = None


def _png(figure: Figure) -> bytes:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=PNG_DPI, bbox_inches="tight", metadata={"Software": None})
    return buffer.getvalue()


def genre_colours(genres: list[str]) -> dict[str, str]:
    """Okabe-Ito colours in order; "Other" is grey."""
    named = [g for g in genres if g != "Other"]
    colours = {g: OKABE_ITO[i % len(OKABE_ITO)] for i, g in enumerate(named)}
    colours["Other"] = GREY
    return colours


def shorten(title: str, length: int = 34) -> str:
    return title if len(title) <= length else title[: length - 1] + "\u2026"


# ---------------------------------------------------------------- accuracy


def accuracy(rows: list[dict]) -> Drawn:
    """RMSE and MAE per model as a dot plot: the differences are hundredths of a star, which bars from 0 hide."""
    figure = Figure(figsize=(8.5, 0.55 * len(rows) + 1.6))
    ax = figure.subplots()
    y = np.arange(len(rows))[::-1]
    for key, label, colour, marker in (("rmse", "RMSE", OKABE_ITO[4], "o"), ("mae", "MAE", OKABE_ITO[5], "s")):
        values = np.array([r[key] for r in rows], dtype=float)
        ax.scatter(values, y, s=70, color=colour, marker=marker, label=label, zorder=3)
        for value, yy in zip(values, y):
            ax.annotate(f"{value:.3f}", (value, yy), xytext=(0, 9), textcoords="offset points", ha="center",
                        fontsize=9, color=colour)
    ax.set_yticks(y, [r["model"] for r in rows])
    ax.set_ylim(-0.7, len(rows) - 0.3)
    ax.set_xlabel("error on the held-out ratings (stars, lower is better)")
    ax.set_title("Rating prediction accuracy, same train/test split")
    ax.legend(loc="lower right", frameon=False)
    return Drawn("accuracy", "Held-out RMSE and MAE of each model on the same split.", _png(figure))


# ---------------------------------------------------------------- ALS convergence


def convergence(history: list[dict], heldout: list[dict]) -> Drawn:
    """Training objective (left) and train vs held-out RMSE (right) per ALS iteration."""
    figure = Figure(figsize=(10, 4))
    left, right = figure.subplots(1, 2)
    iterations = [h["iteration"] for h in history]
    left.plot(iterations, [h["objective"] for h in history], marker="o", color=OKABE_ITO[4])
    left.set_yscale("log")
    left.set_xlabel("iteration")
    left.set_ylabel("objective (squared error + penalty, log scale)")
    left.set_title("Training objective")
    right.plot(iterations, [h["train_rmse"] for h in history], marker="o", color=OKABE_ITO[4], label="train")
    right.plot([p["iteration"] for p in heldout], [p["heldout_rmse"] for p in heldout], marker="s", linestyle="--",
               color=OKABE_ITO[5], label="held-out")
    right.set_xlabel("iteration")
    right.set_ylabel("RMSE (stars)")
    right.set_title("Train vs held-out RMSE")
    right.legend(frameon=False)
    for ax in (left, right):
        ax.xaxis.get_major_locator().set_params(integer=True)
    figure.tight_layout()
    return Drawn("convergence", "ALS training objective and train/held-out RMSE per iteration.", _png(figure))


# ---------------------------------------------------------------- rank x lambda sweep


def sweep(points: list[dict]) -> Drawn:
    """Held-out (solid) and train (dashed) RMSE against lambda, one colour per rank; best point ringed."""
    figure = Figure(figsize=(8.5, 5))
    ax = figure.subplots()
    ranks = sorted({p["rank"] for p in points})
    for i, rank in enumerate(ranks):
        mine = sorted((p for p in points if p["rank"] == rank), key=lambda p: p["reg"])
        regs = [p["reg"] for p in mine]
        colour = OKABE_ITO[i % len(OKABE_ITO)]
        ax.plot(regs, [p["test_rmse"] for p in mine], marker="o", color=colour, label=f"rank {rank}: held-out")
        ax.plot(regs, [p["train_rmse"] for p in mine], marker=".", linestyle="--", color=colour, alpha=0.8,
                label=f"rank {rank}: train")
    best = min(points, key=lambda p: p["test_rmse"])
    ax.scatter([best["reg"]], [best["test_rmse"]], s=260, facecolors="none", edgecolors="black", linewidths=1.5,
               zorder=4, label=f"best held-out: rank {best['rank']}, lambda {best['reg']:g}")
    ax.set_xscale("log")
    regs = sorted({p["reg"] for p in points})
    ax.set_xticks(regs, [f"{g:g}" for g in regs])
    ax.minorticks_off()
    ax.set_xlabel("regularisation lambda (log scale)\n\u2190 over-fitting: train far below held-out"
                  "          under-fitting: both high \u2192")
    ax.set_ylabel("RMSE (stars)")
    ax.set_title("Over- and under-fitting: ALS error over rank x lambda")
    ax.legend(frameon=False, fontsize=9, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    figure.tight_layout()
    return Drawn("sweep", "Train and held-out RMSE over the rank x lambda grid.", _png(figure))


# ---------------------------------------------------------------- latent space


def item_map(points: list[dict], explained: list[float], labelled: int) -> Drawn:
    """Item factors on their first two principal components, coloured by genre, the most-rated titled.

    The inline SVG gives every point a <title> (its movie), which browsers show on hover.
    """
    figure = Figure(figsize=(10, 7.5))
    ax = figure.subplots()
    genres = [g for g in dict.fromkeys(p["genre"] for p in points)]
    colours = genre_colours(sorted(genres, key=lambda g: (g == "Other", g)))
    gids = []
    for genre in sorted(genres, key=lambda g: (g != "Other", g)):  # grey "Other" underneath
        mine = [p for p in points if p["genre"] == genre]
        sizes = 8 + 40 * np.sqrt(np.array([p["count"] for p in mine]) / max(p["count"] for p in points))
        collection = ax.scatter([p["x"] for p in mine], [p["y"] for p in mine], s=sizes, color=colours[genre],
                                alpha=0.75 if genre != "Other" else 0.45, edgecolors="white", linewidths=0.3,
                                label=genre)
        gid = f"movies-{len(gids)}"
        collection.set_gid(gid)
        gids.append((gid, [p["title"] for p in mine]))
    label_without_overlap(figure, ax, sorted(points, key=lambda p: -p["count"]), labelled)
    ax.set_xlabel(f"principal component 1 of the item factors ({explained[0]:.0%} of variance)")
    ax.set_ylabel(f"principal component 2 ({explained[1]:.0%} of variance)")
    ax.set_title(f"Movies in the latent space: the {len(points)} most-rated, PCA of the item factors")
    ax.legend(title="genre", frameon=False, loc="upper left", bbox_to_anchor=(1.0, 1.0), markerscale=1.4)
    figure.tight_layout()
    svg = io.StringIO()
    figure.savefig(svg, format="svg", bbox_inches="tight", metadata={"Date": None})
    return Drawn("item_map", "PCA of the item factors (hover a point for its title).", _png(figure),
                 with_hover_titles(svg.getvalue(), dict(gids)))


def _markers(group: ET.Element):
    """A scatter group's drawn markers in drawing order: matplotlib writes one <use> (or, when each point
    has its own size, one <path>) per point, maybe inside clip groups, after the <defs> they refer to."""
    for child in group:
        if child.tag in (f"{{{SVG_NS}}}use", f"{{{SVG_NS}}}path"):
            yield child
        elif child.tag == f"{{{SVG_NS}}}g":
            yield from _markers(child)


def label_without_overlap(figure: Figure, ax, points: list[dict], limit: int) -> None:
    """Title up to `limit` points, in the given order, skipping any label that would overlap one already placed."""
    renderer = FigureCanvasAgg(figure).get_renderer()
    halo = [patheffects.withStroke(linewidth=3, foreground="white")]
    placed = []
    for p in points:
        if len(placed) == limit:
            break
        label = ax.annotate(shorten(p["title"], 30), (p["x"], p["y"]), xytext=(4, 3), textcoords="offset points",
                            fontsize=8.5, path_effects=halo)
        box = label.get_window_extent(renderer).expanded(1.05, 1.2)
        if any(box.overlaps(other) for other in placed):
            label.remove()
        else:
            placed.append(box)


def with_hover_titles(svg: str, titles_by_gid: dict[str, list[str]]) -> str:
    """Give the n-th marker of each scatter group a <title> (the n-th title), which browsers show on hover."""
    root = ET.fromstring(svg)
    for metadata in root.findall(f"{{{SVG_NS}}}metadata"):  # RDF naming remote vocabularies: not needed inline
        root.remove(metadata)
    for group in root.iter(f"{{{SVG_NS}}}g"):
        titles = titles_by_gid.get(group.get("id", ""))
        if titles is None:
            continue
        markers = list(_markers(group))
        if len(markers) != len(titles):
            raise ValueError(f"{group.get('id')}: {len(markers)} markers for {len(titles)} titles")
        for marker, title in zip(markers, titles):
            ET.SubElement(marker, f"{{{SVG_NS}}}title").text = title
    root.set("width", "100%")
    root.attrib.pop("height", None)
    return ET.tostring(root, encoding="unicode")


# ---------------------------------------------------------------- similarity


def _grouped_ticks(ax, labels: list[str], groups: list[str]) -> None:
    """Tick labels, lines between groups and each group's name along the top."""
    n = len(labels)
    ax.set_xticks(range(n), labels, rotation=90, fontsize=8)
    ax.set_yticks(range(n), labels, fontsize=8)
    start = 0
    for i in range(1, n + 1):
        if i == n or groups[i] != groups[start]:
            if i < n:
                ax.axhline(i - 0.5, color="black", linewidth=1)
                ax.axvline(i - 0.5, color="black", linewidth=1)
            ax.text((start + i - 1) / 2, -0.8, groups[start], ha="center", va="bottom", fontsize=9, fontweight="bold")
            start = i
    ax.grid(False)


def similarity_heatmap(matrix: np.ndarray, titles: list[str], genres: list[str]) -> Drawn:
    size = 3.2 + 0.2 * len(titles)
    figure = Figure(figsize=(size + 1.2, size + 0.6))
    ax = figure.subplots()
    image = ax.imshow(matrix, cmap=DIVERGING, vmin=-1, vmax=1)
    _grouped_ticks(ax, [shorten(t, 28) for t in titles], genres)
    colourbar = figure.colorbar(image, ax=ax, shrink=0.6)
    colourbar.set_label("cosine similarity of item factors")
    ax.set_title("Similarity of popular movies, grouped by genre", pad=26)
    figure.tight_layout()
    return Drawn("similarity", "Cosine similarity of the item factors of popular movies, by genre.", _png(figure))


# ---------------------------------------------------------------- residual structure


def residual_correlation(matrix: np.ndarray, counts: np.ndarray, titles: list[str]) -> Drawn:
    n = len(titles)
    figure = Figure(figsize=(3.5 + 0.75 * n, 2.6 + 0.6 * n))
    ax = figure.subplots()
    image = ax.imshow(np.ma.masked_invalid(matrix), cmap=DIVERGING, vmin=-1, vmax=1)
    for i in range(n):
        for j in range(n):
            if i != j:
                value = "n/a" if np.isnan(matrix[i, j]) else f"{matrix[i, j]:+.2f}"
                ax.text(j, i, f"{value}\nn={counts[i, j]}", ha="center", va="center", fontsize=8,
                        color="white" if abs(np.nan_to_num(matrix[i, j])) > 0.6 else "black")
    labels = [shorten(t, 30) for t in titles]
    ax.set_xticks(range(n), labels, rotation=40, ha="right")
    ax.set_yticks(range(n), labels)
    ax.grid(False)
    colourbar = figure.colorbar(image, ax=ax, shrink=0.8)
    colourbar.set_label("Pearson correlation of bias residuals")
    ax.set_title("What the biases leave: residual correlation\n(users who rated both; n = users)")
    figure.tight_layout()
    return Drawn("residual_correlation", "Correlation of the bias residuals r - mu - b_u - b_i between movies.",
                 _png(figure))


def residual_components(components: dict) -> Drawn:
    figure = Figure(figsize=(12, 5.2))
    axes = figure.subplots(1, 2)
    for j, (ax, movies) in enumerate(zip(axes, components["components"])):
        loadings = [m["loading"] for m in movies]
        y = np.arange(len(movies))
        ax.barh(y, loadings, color=[OKABE_ITO[5] if v < 0 else OKABE_ITO[4] for v in loadings])
        ax.set_yticks(y, [shorten(m["title"], 36) for m in movies], fontsize=9)
        ax.axvline(0, color="black", linewidth=0.8)
        ax.set_xlabel("loading on the component (unit vector)")
        ax.set_title(f"Residual PC {j + 1} ({components['explained'][j]:.0%} of variance): both ends")
    figure.suptitle(f"Principal components of the bias residuals: {components['users']} most active users x "
                    f"{components['movies']} most-rated movies")
    figure.tight_layout()
    return Drawn("residual_components", "The movies at both ends of the first two principal components of the "
                 "bias-residual matrix.", _png(figure))


# ---------------------------------------------------------------- target user


def user_profile(profile: list[dict], user_id: int, overall_mean: float) -> Drawn:
    rows = profile[:14]
    figure = Figure(figsize=(7, 0.32 * len(rows) + 2.0))
    left, right = figure.subplots(1, 2, sharey=True)
    y = np.arange(len(rows))[::-1]
    left.barh(y, [r["count"] for r in rows], color=OKABE_ITO[1])
    left.set_yticks(y, [r["genre"] for r in rows])
    left.set_xlabel("movies rated (count)")
    left.set_title("Ratings per genre")
    right.scatter([r["mean_rating"] for r in rows], y, color=OKABE_ITO[5], s=40, zorder=3)
    right.axvline(overall_mean, color="black", linestyle=":", linewidth=1.2, label=f"user's mean {overall_mean:.2f}")
    right.set_xlim(0.5, 5.0)
    right.set_xlabel("mean rating (stars)")
    right.set_title("Mean rating per genre")
    right.legend(frameon=False, loc="lower left")
    figure.suptitle(f"User {user_id}: ratings profile by genre")
    figure.tight_layout()
    return Drawn("user_profile", f"User {user_id}'s ratings by genre.", _png(figure))
