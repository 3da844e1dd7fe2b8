"""Small document fixtures the suite writes itself: txt, md, html, docx (python-docx), pdf (by hand)."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path


def write_pdf(path: Path, lines: list[str], title: str = "", creation: str = "D:20190315120000Z") -> Path:
    """A minimal, valid one-page PDF with Helvetica text lines (pypdf extracts them back)."""

    def esc(s: str) -> str:
        return s.replace("\\", "\\\\").replace("(", "\\(").replace(")", "\\)")

    content = "BT /F1 12 Tf 72 720 Td 14 TL " + " ".join(f"({esc(ln)}) '" for ln in lines) + " ET"
    objs = [
        "<< /Type /Catalog /Pages 2 0 R >>",
        "<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
        "<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Resources << /Font << /F1 4 0 R >> >> "
        "/Contents 5 0 R >>",
        "<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica /Encoding /WinAnsiEncoding >>",
        f"<< /Length {len(content.encode('latin-1'))} >>\nstream\n{content}\nendstream",
        f"<< /Title ({esc(title)}) /CreationDate ({creation}) >>",
    ]
    out = b"%PDF-1.4\n"
    offsets = []
    for i, body in enumerate(objs, 1):
        offsets.append(len(out))
        out += f"{i} 0 obj\n{body}\nendobj\n".encode("latin-1")
    xref = len(out)
    out += f"xref\n0 {len(objs) + 1}\n0000000000 65535 f \n".encode()
    for off in offsets:
        out += f"{off:010d} 00000 n \n".encode()
    out += f"trailer\n<< /Size {len(objs) + 1} /Root 1 0 R /Info 6 0 R >>\nstartxref\n{xref}\n%%EOF\n".encode()
    path.write_bytes(out)
    return path


def write_docx(path: Path, title: str, sections: list[tuple[str, list[str]]], created: datetime | None = None) -> Path:
    import docx

    d = docx.Document()
    d.core_properties.title = title
    if created:
        d.core_properties.created = created
    for heading, paras in sections:
        d.add_heading(heading, level=1)
        for p in paras:
            d.add_paragraph(p)
    d.save(str(path))
    return path


HTML = """<!doctype html><html><head><title>Asthma care</title>
<meta name="date" content="2021-06-01"><script>var x = "ignore me";</script><style>p{}</style></head>
<body><nav>Home | About</nav><h1>Asthma care</h1>
<h2>Inhalers</h2><p>Inhaled corticosteroids reduce airway inflammation in persistent asthma.</p>
<ul><li>Use a spacer with metered-dose inhalers.</li></ul>
<h2>Emergencies</h2><p>Severe attacks need oxygen and systemic steroids.</p></body></html>"""

MD = """---
title: Hypertension guide
date: 2022-03-04
---
# Hypertension guide

Intro paragraph about blood pressure.

## Treatment

ACE inhibitors are first-line therapy for many adults. Thiazide diuretics are an alternative.

## Monitoring

Measure blood pressure at home twice a day.
"""
