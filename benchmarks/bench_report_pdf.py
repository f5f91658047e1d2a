"""The report's PDF: osteofe's matplotlib typesetter vs WeasyPrint (HTML -> PDF), timed.

Usage: .venv/bin/python benchmarks/bench_report_pdf.py RESULT_DIR
(WeasyPrint is not a dependency: put it on PYTHONPATH, e.g. ``pip install --target /tmp/wp
weasyprint pypdfium2`` and ``PYTHONPATH=/tmp/wp``, or the row says "not installed").
Writes benchmarks/results/report_pdf.json: seconds and page count of each renderer, and,
with pypdfium2, page 1 of each as PNG next to the JSON for a side-by-side look.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import RESULTS, save

from osteofe.report import (
    _slices,
    _typed,
    collect_report_data,
    read_result,
    render_html,
    render_pdf,
)


def _pages(pdf: Path, png: Path | None) -> int | None:
    try:
        import pypdfium2 as pdfium
    except ImportError:
        return None
    doc = pdfium.PdfDocument(str(pdf))
    if png is not None:
        doc[0].render(scale=1.2).to_pil().save(png)
    return len(doc)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("result_dir", type=Path)
    args = parser.parse_args()
    result, sha = read_result(args.result_dir)
    typed = _typed(result)
    picture = args.result_dir / "femur_risk.png"
    data = collect_report_data(typed, result_sha256=sha, ct_slices=_slices(typed),
                               picture_png=picture.read_bytes() if picture.is_file() else None)
    rows: dict[str, object] = {}
    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        pages = render_pdf(data, Path(tmp) / "mpl.pdf")
        rows["matplotlib"] = {"seconds": round(time.perf_counter() - start, 2),
                              "pages": _pages(Path(tmp) / "mpl.pdf",
                                              RESULTS / "report_pdf_matplotlib_p1.png")
                              or len(pages) or None}
        html = Path(tmp) / "report.html"
        html.write_text(render_html(data), encoding="utf-8")
        try:
            import weasyprint
        except ImportError:
            rows["weasyprint"] = "not installed"
        else:
            start = time.perf_counter()
            weasyprint.HTML(filename=str(html)).write_pdf(Path(tmp) / "wp.pdf")
            rows["weasyprint"] = {"version": weasyprint.__version__,
                                  "seconds": round(time.perf_counter() - start, 2),
                                  "pages": _pages(Path(tmp) / "wp.pdf",
                                                  RESULTS / "report_pdf_weasyprint_p1.png")}
    print(rows)
    save("report_pdf", {"result_dir": str(args.result_dir), "renderers": rows,
                        "note": "timings on a shared 2-core machine under load from other runs"})


if __name__ == "__main__":
    main()
