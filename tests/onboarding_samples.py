"""Three sample layouts the synthetic feeds do not use, written from scratch for the onboarding tests.

Deterministic and small: 40 declarations of made-up traders (synthetic data).
"""

from __future__ import annotations

import datetime as dt
import json
import random
from pathlib import Path

PRODUCTS = [("6109100010", 12.0), ("8517620000", 250.0), ("0901110000", 4.5), ("8703231990", 9000.0), ("4011100000", 60.0)]
PARTNERS = ["CN", "DE", "US", "XA", "XB", "TR"]


def _rows(n: int = 40, seed: int = 3) -> list[dict]:
    rnd = random.Random(seed)
    out = []
    for i in range(n):
        hs, price = rnd.choice(PRODUCTS)
        mass = round(rnd.uniform(10, 5000), 1)
        out.append(
            {
                "id": f"H{26000000 + i * 7}",
                "item": 1 + (i % 3 == 2),
                "date": dt.date(2026, 11, 27) - dt.timedelta(days=rnd.randint(0, 3)),
                "flow": rnd.choice(["import", "export"]),
                "hs": hs,
                "partner": rnd.choice(PARTNERS),
                "origin": rnd.choice(PARTNERS),
                "trader": f"XH{rnd.randint(10000000, 99999999)}",
                "mass": mass,
                "value": round(mass * price * rnd.uniform(0.8, 1.2), 2),
                "currency": rnd.choice(["EUR", "USD"]),
                "ref": f"BL-{rnd.randint(100000, 999999)}",
            }
        )
    return out


def fixed_width(path: Path) -> Path:
    """Latin-1 fixed-width text, a header line, 10-digit national tariff lines, dd.mm.yyyy, decimal comma."""
    cols = [("DECL_NO", 10), ("POS", 4), ("DATUM", 11), ("R", 2), ("WARENNR", 11), ("LAND", 5), ("URSPR", 6),
            ("EORI", 11), ("MASSE_KG", 12), ("WERT", 14)]
    lines = ["".join(f"{n:<{w}}" for n, w in cols)]
    for r in _rows():
        vals = [r["id"], str(r["item"]), r["date"].strftime("%d.%m.%Y"), "E" if r["flow"] == "import" else "A",
                r["hs"], r["partner"], r["origin"], r["trader"], f"{r['mass']:.1f}".replace(".", ","),
                f"{r['value']:.2f}".replace(".", ",")]
        line = ""
        for (_, w), v in zip(cols, vals, strict=True):
            line += f"{v:<{w - 1}} "
        lines.append(line.rstrip() + " " * (sum(w for _, w in cols) - len(line.rstrip())))
    path.write_bytes(("\r\n".join(lines) + "\r\n").encode("latin-1"))
    return path


def excel_two_headers(path: Path) -> Path:
    """An .xlsx with a title, a blank row, then two header rows (merged group titles above names)."""
    import openpyxl

    wb = openpyxl.Workbook()
    ws = wb.active
    ws.title = "Déclarations"
    ws.append(["Statistiques douanières (données synthétiques)"])
    ws.append([])
    ws.append(["Déclaration", None, None, "Marchandise", None, "Valeur", None, "Pays", None])
    ws.append(["Numéro", "Date", "Flux", "Code SH", "Poids net (kg)", "Montant", "Devise", "Partenaire", "Origine"])
    ws.merge_cells("A3:C3")
    ws.merge_cells("D3:E3")
    ws.merge_cells("F3:G3")
    ws.merge_cells("H3:I3")
    for r in _rows():
        hs = r["hs"][:8]
        ws.append([r["id"], dt.datetime.combine(r["date"], dt.time()), "IM" if r["flow"] == "import" else "EX",
                   f"{hs[:4]}.{hs[4:6]}.{hs[6:8]}", r["mass"], r["value"], r["currency"], r["partner"], r["origin"]])
    wb.save(path)
    return path


def jsonl_nested(path: Path) -> Path:
    """JSON lines, one item per line, nested objects and a list."""
    with path.open("w", encoding="utf-8") as fh:
        for r in _rows():
            obj = {
                "decl": {"id": r["id"], "item": r["item"], "date": r["date"].isoformat()},
                "flow": r["flow"],
                "goods": {"commodity": r["hs"][:6], "net_weight_kg": r["mass"], "tags": ["synthetic"]},
                "value": {"amount": r["value"], "currency": r["currency"]},
                "partner": {"country": r["partner"]},
                "origin": r["origin"],
                "consignment": {"ref": r["ref"]},
            }
            fh.write(json.dumps(obj) + "\n")
    return path
