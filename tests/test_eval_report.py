"""phenomena.png (tinylm/eval/report.py): one bar per phenomenon, the mean of its paradigms."""

import pytest

from tinylm.eval.report import phenomenon_rows, plot_phenomena


def _tasks(n_phenomena):
    uids = {f"paradigm_{i}_{j}": {"accuracy": 0.5 + 0.1 * j, "phenomenon": f"phen_{i}"} for i in range(n_phenomena) for j in range(2)}
    phenomena = {f"phen_{i}": {"accuracy": (0.5 + 0.6) / 2, "uids": 2} for i in range(n_phenomena)}
    return {"blimp": {"chance": 0.5, "uids": uids, "phenomena": phenomena, "macro": 0.55},
            "zorro": {"chance": 0.5, "uids": {}, "phenomena": {"agreement": {"accuracy": 0.9, "uids": 1}}, "macro": 0.9},
            "wug_adj": {"metric": "spearman", "uids": {}, "macro": 0.3}}  # no phenomena: not drawn


def test_phenomenon_rows_and_png(tmp_path):
    rows = phenomenon_rows(_tasks(2))
    assert rows == [("blimp", "phen_0", pytest.approx(0.55), 0.5), ("blimp", "phen_1", pytest.approx(0.55), 0.5),
                    ("zorro", "agreement", 0.9, 0.5)]
    import matplotlib.image

    small = plot_phenomena(_tasks(2), tmp_path / "small.png", "t")
    large = plot_phenomena(_tasks(12), tmp_path / "large.png", "t")
    assert matplotlib.image.imread(large).shape[0] > matplotlib.image.imread(small).shape[0]  # a bar per phenomenon
    assert plot_phenomena({"wug_adj": _tasks(1)["wug_adj"]}, tmp_path / "none.png", "t") is None
    assert not (tmp_path / "none.png").exists()
