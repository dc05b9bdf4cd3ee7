"""The pipeline benchmark: what its report holds (its numbers are measurements, never asserted)."""

from __future__ import annotations

import json
from pathlib import Path

from inference.evaluation.bench.pipeline import STAGES, bench_pipeline, pipeline_table

PHOTO = Path(__file__).parent / "data" / "photos" / "congress_C000537.jpg"
# The engine's request made small (a 96^3 mesh, a 1024 px texture) and no warm-up request, so the test stays
# quick; every stage still runs.
SMALL_REQUEST = {"mesh_resolution": 96, "texture_size": 1024}


def test_pipeline_report_times_every_stage_of_each_budget() -> None:
    report = json.loads(json.dumps(bench_pipeline([PHOTO], ["preview", "2"], device="cpu",
                                                  request=SMALL_REQUEST, warm_up=False)))

    assert {"platform", "cpu_count", "torch_threads", "device"} <= report["machine"].keys()
    reference = report["reference_step_seconds"]   # how fast the machine ran, before and after the budgets
    assert reference.keys() == {"before", "after"}
    assert all(r.keys() == {"every_ray", "lattice_3x3"} and all(v > 0 for v in r.values())
               for r in reference.values())
    assert report["budgets"]["2"]["fit_steps"] == 2 and "sampling" in report["budgets"]["2"]
    assert [(run["photo"], run["budget"]) for run in report["runs"]] == [(PHOTO.name, "preview"),
                                                                         (PHOTO.name, "2")]
    for budget in ("preview", "2"):
        medians = report["medians"][budget]
        # The preview head comes only before a refinement: the budget "preview" is its own result.
        expected = set(STAGES) - ({"preview"} if budget == "preview" else set())
        assert expected <= medians["seconds"].keys()
        assert all(seconds >= 0 for seconds in medians["seconds"].values())
        assert medians["total"] >= 0 and isinstance(medians["peak_mib"], float)
    assert (report["medians"]["2"]["fit_steps"], report["medians"]["2"]["tune_steps"]) == (2, 0)
    assert report["medians"]["preview"]["fit_steps"] == 0
    assert report["medians"]["preview"]["preview_head"] is None
    assert 0 < report["medians"]["2"]["preview_head"] < report["medians"]["2"]["total"]
    table = pipeline_table(report)
    assert all(len(line) <= 100 for line in table.splitlines())
    assert [line.split()[0] for line in table.splitlines()[1:len(STAGES) + 1]] == list(STAGES)
