"""``classification_metrics`` reports top-5 from 6 classes on (``num_classes > 5``), at the boundary."""
from lightning_temporal.metrics import classification_metrics


def test_top5_from_six_classes():
    assert "top5" in classification_metrics(6).keys()
    assert "top5" not in classification_metrics(5).keys()
