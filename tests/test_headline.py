"""The one sentence that says what a run achieved (report's first line, the CLI's last)."""

from __future__ import annotations

from crowdpatch.summary import headline

RUN = {
    "images": 40,
    "answers": 900,
    "times_are": "modeled",
    "modeled_seconds_per_image": {"patch": 66.0, "polygon": 79.0},
    "speedup_vs_polygon": 79.0 / 66.0,
    "mask_iou": {"patch": 0.661, "saliency": 0.549, "polygon": None},
    "settings": {"planner": "fixed"},
}


def test_a_typical_run_gives_iou_time_speed_and_saliency_alone():
    assert headline(RUN) == (
        "Crowd masks: IoU 0.66 at 66 s of modeled human time per image, 1.2x faster than polygons; "
        "saliency alone: 0.55."
    )


def test_measured_times_are_called_measured():
    measured = {**RUN, "times_are": "measured", "measured_seconds_per_image": RUN["modeled_seconds_per_image"]}
    del measured["modeled_seconds_per_image"]
    assert "at 66 s of measured human time per image" in headline(measured)
    assert "human time (modeled and measured)" in headline({**RUN, "times_are": "mixed"})


def test_slower_than_polygons_is_said_plainly():
    slow = {**RUN, "modeled_seconds_per_image": {"patch": 137.0, "polygon": 79.0}, "speedup_vs_polygon": 79.0 / 137.0}
    text = headline(slow)
    assert "slower than polygons (0.58x their speed)" in text and "faster" not in text


def test_without_ground_truth_there_is_no_iou_and_it_says_why():
    text = headline({**RUN, "mask_iou": {"patch": None, "saliency": None, "polygon": None}})
    assert text.startswith("Crowd masks: 66 s of modeled human time per image, 1.2x faster than polygons")
    assert "no ground truth, so no IoU" in text and "IoU 0" not in text and "saliency" not in text


def test_an_incomplete_run_names_its_open_questions():
    text = headline({**RUN, "complete": False, "open_questions": 12})
    assert text.endswith(f"; incomplete: 12 questions still open; these masks use the {RUN['answers']} answers so far.")
    assert "incomplete" not in headline({**RUN, "complete": True})


def test_a_run_without_answers_says_so_instead_of_a_cost():
    text = headline(
        {
            **RUN,
            "answers": 0,
            "modeled_seconds_per_image": {"patch": 0.0, "polygon": 79.0},
            "speedup_vs_polygon": None,
            "mask_iou": {"patch": None},
            "complete": False,
            "open_questions": 80,
        }
    )
    assert text == "No answers yet for 40 images (run `crowdpatch simulate`, or serve workers)."


def test_the_demo_adds_the_adaptive_planner_and_the_training_result():
    demo = {
        **RUN,
        "adaptive": {"mask_iou": 0.7, "modeled_seconds_per_image": 7.4, "speedup_vs_polygon": 10.7},
        "accuracy": {
            "none": {"mean": 0.6, "worst_group": 0.22},
            "patch": {"mean": 0.99, "worst_group": 0.99},
            "gt": {"mean": 1.0, "worst_group": 1.0},
        },
    }
    text = headline(demo)
    assert text.startswith("Crowd masks (fixed planner): IoU 0.66 at 66 s")
    assert "adaptive planner: IoU 0.70 at 7.4 s, 11x faster than polygons" in text
    assert text.endswith(
        "worst-group accuracy 0.22 with plain training, 0.99 with crowd masks, 1.00 with ground-truth masks."
    )
    assert ". " not in text  # one sentence
