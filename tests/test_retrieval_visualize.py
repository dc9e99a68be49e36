"""draw_ranked_results and draw_ranked_comparison: layout, border colours, errors."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from isr_reid.retrieval.visualize import draw_ranked_results


def _solid(color: tuple[int, int, int]) -> Image.Image:
    return Image.new("RGB", (20, 40), color)


def test_layout_and_borders(tmp_path):
    queries = [_solid((0, 0, 255)), _solid((255, 255, 0))]
    gallery = [_solid((10 * i, 10 * i, 10 * i)) for i in range(5)]
    gallery_path = tmp_path / "g3.png"
    gallery[3].save(gallery_path)
    gallery[3] = gallery_path  # paths are accepted too
    ranked = np.array([[3, 1, 0], [4, 2, 3]])
    correct = np.array([[True, False, True], [False, False, True]])
    out = draw_ranked_results(queries, gallery, ranked, correct=correct, scores=np.ones((2, 3)),
                              out_path=tmp_path / "sub" / "r.png", thumb_size=(32, 16))
    img = np.asarray(Image.open(out).convert("RGB"))
    # height: 2 rows of (32 + 14 label + 4 gap); width: 16 + 12 + 3 * (16 + 4)
    assert img.shape == (2 * 50, 16 + 12 + 3 * 20, 3)
    assert tuple(img[10, 5]) == (0, 0, 255)          # first query thumbnail
    assert tuple(img[60, 5]) == (255, 255, 0)        # second query thumbnail
    for i in range(2):
        for j in range(3):
            x = 16 + 12 + j * 20
            y = i * 50
            expected = (0, 170, 0) if correct[i, j] else (220, 0, 0)
            assert tuple(img[y + 1, x + 1]) == expected          # border pixel
            v = 10 * ranked[i, j]
            assert tuple(img[y + 16, x + 8]) == (v, v, v)        # thumbnail centre
    assert not list((tmp_path / "sub").glob(".*.tmp"))


def test_bad_inputs(tmp_path):
    q = [_solid((0, 0, 0))]
    with pytest.raises(IndexError, match="ranked_indices"):
        draw_ranked_results(q, [_solid((0, 0, 0))], np.array([[1]]), out_path=tmp_path / "x.png")
    with pytest.raises(ValueError, match="correct"):
        draw_ranked_results(q, [_solid((0, 0, 0))], np.array([[0]]), correct=np.ones((1, 2), bool),
                            out_path=tmp_path / "x.png")
    with pytest.raises(FileNotFoundError, match="gallery_images"):
        draw_ranked_results(q, [tmp_path / "missing.jpg"], np.array([[0]]), out_path=tmp_path / "x.png")
    assert not (tmp_path / "x.png").exists()


def _runs(row: np.ndarray, colours: list[tuple[int, int, int]]) -> list[tuple[int, int, int]]:
    """The sequence of listed colours met along a pixel row, one entry per contiguous run."""
    out: list[tuple[int, int, int]] = []
    prev = None
    for px in map(tuple, row):
        cur = px if px in colours else None
        if cur is not None and cur != prev:
            out.append(cur)
        prev = cur
    return out


def test_comparison_shows_each_panel_in_order(tmp_path):
    from isr_reid.retrieval.visualize import draw_ranked_comparison

    queries = [_solid((0, 0, 255)), _solid((255, 255, 0))]
    gallery = [_solid((10 * i + 30, 5, 90)) for i in range(5)]
    before = np.array([[3, 1, 0], [4, 2, 3]])
    after = np.array([[0, 1], [2, 4]])
    cb = np.array([[True, False, True], [False, False, True]])
    ca = np.array([[False, True], [True, True]])
    out = draw_ranked_comparison(queries, gallery, [("before", before, cb, None), ("after", after, ca, np.ones((2, 2)))],
                                 out_path=tmp_path / "c.png", title="A title", subtitle="a subtitle",
                                 thumb_size=(32, 16))
    img = np.asarray(Image.open(out).convert("RGB"))
    green, red = (0, 170, 0), (220, 0, 0)
    for i, q in enumerate([(0, 0, 255), (255, 255, 0)]):
        ys = np.flatnonzero(np.all(img[:, 2] == q, axis=1))
        assert len(ys) == 32  # the query thumbnail, once
        y = ys[0]
        # along the thumbnails' top border: before's borders, then after's, in rank order
        borders = _runs(img[y + 1, 16:], [green, red])
        assert borders == [green if c else red for c in [*cb[i], *ca[i]]]
        # along the thumbnails' middle: the ranked gallery images, before then after
        shown = _runs(img[y + 16, 16:], [tuple(int(v) for v in np.asarray(g)[0, 0]) for g in gallery])
        assert shown == [tuple(int(v) for v in np.asarray(gallery[j])[0, 0]) for j in [*before[i], *after[i]]]
    # the legend's swatches are above the first row, in the two border colours
    top = img[: np.flatnonzero(np.all(img[:, 2] == (0, 0, 255), axis=1))[0]]
    assert np.all(top == green, axis=2).any() and np.all(top == red, axis=2).any()
    with pytest.raises(ValueError, match="panels"):
        draw_ranked_comparison(queries, gallery, [], out_path=tmp_path / "x.png")
    with pytest.raises(IndexError, match="after"):
        draw_ranked_comparison(queries, gallery, [("after", after + 5, None, None)], out_path=tmp_path / "x.png")


def test_comparison_wraps_a_long_subtitle_instead_of_widening(tmp_path):
    from isr_reid.retrieval.visualize import draw_ranked_comparison

    queries, gallery = [_solid((0, 0, 255))], [_solid((200, 5, 90)) for _ in range(3)]
    panels = [("before", np.array([[0, 1, 2]]), None, None)]
    kw = dict(title="T", thumb_size=(32, 16))
    short = Image.open(draw_ranked_comparison(queries, gallery, panels, out_path=tmp_path / "s.png", subtitle="w", **kw))
    long_text = " ".join(["word"] * 300)  # thousands of pixels on one line
    long = Image.open(draw_ranked_comparison(queries, gallery, panels, out_path=tmp_path / "l.png", subtitle=long_text, **kw))
    assert long.width == short.width  # same thumbnails, same width
    assert long.height > short.height + 20  # the subtitle took several lines
