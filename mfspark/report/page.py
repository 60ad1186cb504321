"""The report as one self-contained HTML page: inline CSS, figures embedded (PNG as base64, the movie map as
inline SVG with hover titles), no script, no font or style from the network. Each figure is also a PNG
file beside the page (`figures/NAME.png`), linked under the figure.
"""

from __future__ import annotations

import base64
import html
import math

from mfspark.report.figures import Drawn

STYLE = """
body { font-family: "DejaVu Sans", Helvetica, Arial, sans-serif; margin: 0 auto; max-width: 1180px;
       padding: 0 24px 48px; color: #1a1a1a; line-height: 1.45; }
h1 { font-size: 26px; margin: 24px 0 4px; } h2 { font-size: 20px; margin-top: 36px;
  border-bottom: 2px solid #0072B2; padding-bottom: 4px; }
p.lead { color: #444; margin-top: 0; } p.note { color: #555; font-size: 13px; }
table { border-collapse: collapse; font-size: 13.5px; margin: 10px 0; }
th, td { padding: 4px 10px; border-bottom: 1px solid #ddd; text-align: left; vertical-align: top; }
th { background: #f2f5f8; } td.num { text-align: right; font-variant-numeric: tabular-nums; }
tr.best td { font-weight: bold; }
figure { margin: 14px 0; } figure img, figure svg { max-width: 100%; height: auto; }
figcaption { font-size: 13px; color: #555; }
.side { display: flex; gap: 24px; flex-wrap: wrap; align-items: flex-start; } .side > div { flex: 1 1 480px; }
.neighbours td:first-child { font-weight: bold; }
"""

BEST = ' class="best"'  # the row with the lowest held-out RMSE


def escape(value) -> str:
    return html.escape(str(value), quote=True)


def number(value, digits: int = 4) -> str:
    """A numeric cell: shown rounded, the exact value in data-value (the tests compare both)."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return '<td class="num">-</td>'
    if isinstance(value, int):
        return f'<td class="num" data-value="{value}">{value:,}</td>'
    return f'<td class="num" data-value="{value!r}">{value:.{digits}f}</td>'


def table(headers: list[str], rows: list[str], table_id: str, css_class: str = "") -> str:
    head = "".join(f"<th>{escape(h)}</th>" for h in headers)
    return (f'<table id="{table_id}" class="{css_class}"><thead><tr>{head}</tr></thead>'
            f'<tbody>{"".join(rows)}</tbody></table>')


def figure(drawn: Drawn) -> str:
    if drawn.svg is not None:
        body = drawn.svg
    else:
        encoded = base64.b64encode(drawn.png).decode("ascii")
        body = f'<img src="data:image/png;base64,{encoded}" alt="{escape(drawn.caption)}">'
    return (f'<figure id="fig-{drawn.name}">{body}<figcaption>{escape(drawn.caption)} '
            f'<a href="figures/{drawn.name}.png">PNG</a></figcaption></figure>')


def accuracy_table(rows: list[dict], ranking_keys: list[str]) -> str:
    best = min(r["rmse"] for r in rows)
    body = []
    for r in rows:
        cells = [f"<td>{escape(r['model'])}</td>", number(r["rmse"]), number(r["mae"])]
        cells += [number(r.get(k)) for k in ranking_keys]
        cells += [number(r.get("scored")), number(r.get("fit_s"), 1), f"<td>{escape(r['description'])}</td>"]
        body.append(f"<tr{BEST if r['rmse'] == best else ''}>{''.join(cells)}</tr>")
    return table(["model", "RMSE", "MAE", *ranking_keys, "test ratings", "fit s", "what"], body, "accuracy")


def lists_candidates_table(candidates: dict, test: dict) -> str:
    """`--lists auto`'s candidates by validation NDCG@10, each with its test scores (refitted on all training: the
    evaluate stage's `test_ndcg`, `test_precision`); the chosen one in bold. A run evaluated before candidates had
    test scores shows the chosen one's only (`test`: the lists' metrics)."""
    body = []
    for row in sorted(candidates["candidates"], key=lambda r: -r["validation_ndcg"]):
        chosen = row is max(candidates["candidates"], key=lambda r: r["validation_ndcg"])
        what = ", ".join(f"{k} {row[k]:g}" for k in ("rank", "reg", "alpha", "min_rating") if row.get(k) is not None)
        scores = {"ndcg@10": row["test_ndcg"], "precision@10": row["test_precision"]} if "test_ndcg" in row else \
            test if chosen else {}
        cells = [f"<td>{escape(row['model'])}</td><td>{escape(what)}</td>", number(row["validation_ndcg"]),
                 number(row["validation_precision"]), number(scores.get("ndcg@10")),
                 number(scores.get("precision@10"))]
        body.append(f"<tr{BEST if chosen else ''}>{''.join(cells)}</tr>")
    return table(["lists model", "parameters", "validation NDCG@10", "validation precision@10", "test NDCG@10",
                  "test precision@10"], body, "lists-candidates")


def convergence_table(history: list[dict], heldout: list[dict]) -> str:
    by_iteration = {p["iteration"]: p["heldout_rmse"] for p in heldout}
    rows = [f"<tr>{number(h['iteration'])}{number(h['train_rmse'])}{number(h['objective'], 1)}"
            f"{number(by_iteration.get(h['iteration']))}</tr>" for h in history]
    return table(["iteration", "train RMSE", "objective", "held-out RMSE"], rows, "convergence")


def sweep_table(points: list[dict]) -> str:
    best = min(p["test_rmse"] for p in points)
    rows = [f"<tr{BEST if p['test_rmse'] == best else ''}>{number(p['rank'])}{number(p['reg'], 3)}"
            f"{number(p['train_rmse'])}{number(p['test_rmse'])}{number(p['fit_s'], 1)}</tr>" for p in points]
    return table(["rank", "lambda", "train RMSE", "held-out RMSE", "fit s"], rows, "sweep")


def neighbours_table(movies: list[dict], neighbours: dict[str, dict[int, list[dict]]]) -> str:
    """Each movie's neighbours by each model (`neighbours`: model name -> movie id -> neighbours), side by side."""
    rows = []
    for m in movies:
        listed = ["; ".join(f"{escape(n['title'])} ({n['similarity']:.2f})" for n in by_movie.get(m["movie_id"], []))
                  for by_movie in neighbours.values()]
        rows.append(f"<tr><td>{escape(m['title'])}</td><td>{escape(m['genre'])}</td>"
                    + "".join(f"<td>{cell}</td>" for cell in listed) + "</tr>")
    return table(["movie", "genre", *(f"{name}: nearest neighbours (similarity)" for name in neighbours)], rows,
                 "neighbours", "neighbours")


def neighbour_quality_table(quality: dict[str, dict]) -> str:
    rows = [f"<tr><td>{escape(name)}</td>{number(q['genre_agreement'])}{number(q['lift'], 2)}{number(q['pairs'])}</tr>"
            for name, q in quality.items()]
    return table(["similar movies of", "genre agreement", "co-watch lift", "pairs"], rows, "neighbour-quality")


def top_n_table(items: list[dict]) -> str:
    rows = [f"<tr>{number(i['rank'])}<td>{escape(i['title'])}</td><td>{escape(', '.join(i['genres']))}</td>"
            f"{number(i['score'], 2)}</tr>" for i in items]
    return table(["#", "title", "genres", "score"], rows, "top-n")


def genre_rows_table(rows: list[dict]) -> str:
    by_genre: dict[str, list[dict]] = {}
    for r in rows:
        by_genre.setdefault(r["genre"], []).append(r)
    body = [f"<tr><td>{escape(g)}</td><td>{'; '.join(escape(i['title']) for i in items)}</td></tr>"
            for g, items in by_genre.items()]
    return table(["genre row", "movies, best first"], body, "genre-rows")


def page(data: dict, drawn: dict[str, Drawn]) -> str:
    """The whole page from the report's data (report.json) and its drawn figures."""
    acc, conv, user = data["accuracy"], data["convergence"], data["user"]
    sections = [
        f"<h1>Model report</h1><p class=\"lead\">{escape(data['summary'])}</p>",
        "<h2>Accuracy</h2>",
        f"<p class=\"note\">{escape(acc['note'])}</p>",
        accuracy_table(acc["rows"], acc["ranking_keys"]),
        figure(drawn["accuracy"]),
        *(["<h3>Lists model, chosen on validation (--lists auto)</h3>",
           lists_candidates_table(data["lists_candidates"], data.get("lists_test", {}))]
          if data.get("lists_candidates") else []),
        "<h2>ALS convergence</h2>",
        f"<p class=\"note\">{escape(conv['note'])}</p>",
        figure(drawn["convergence"]),
        convergence_table(conv["history"], conv["heldout"]),
    ]
    if data.get("sweep"):
        sections += ["<h2>Rank x lambda sweep</h2>", f"<p class=\"note\">{escape(data['sweep']['note'])}</p>",
                     figure(drawn["sweep"]), sweep_table(data["sweep"]["points"])]
    sim = data["similarity"]
    sections += [
        "<h2>The latent space</h2>", figure(drawn["item_map"]),
        "<h2>Similar movies</h2>", f"<p class=\"note\">{escape(sim['note'])}</p>",
        figure(drawn["similarity"]), neighbour_quality_table(sim["quality"]),
        neighbours_table(sim["movies"], {name: {int(k): v for k, v in by_movie.items()}
                                         for name, by_movie in sim["neighbours"].items()}),
        "<h2>Residual structure</h2>", f"<p class=\"note\">{escape(data['residuals']['note'])}</p>",
        figure(drawn["residual_correlation"]), figure(drawn["residual_components"]),
        f"<h2>User {user['user_id']}</h2>", f"<p class=\"note\">{escape(user['note'])}</p>",
        f"<div class=\"side\"><div>{figure(drawn['user_profile'])}</div>"
        f"<div><h3>Top {len(user['top_n'])}</h3>{top_n_table(user['top_n'])}"
        f"<h3>Genre rows</h3>{genre_rows_table(user['genre_rows'])}</div></div>",
        f"<p class=\"note\">Inputs: {escape(data['inputs'])}. Built in {data['seconds']:.0f} s.</p>",
    ]
    return ("<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>mfspark model report</title>"
            f"<style>{STYLE}</style></head><body>{''.join(sections)}</body></html>\n")
