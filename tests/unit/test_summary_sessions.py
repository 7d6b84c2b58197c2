"""How ``summary.collect`` reads the project-wide scan search: sessions from its session columns
(one per session, also from the empty-scan row of a session without scans), scans once each even
if an XNAT answered one row per scan x resource, and the experiment listing as a fallback when the
search answers without session columns. The listings are canned rows; the HTTP side (the bundled
server's answers, request counts) is tested in ``tests/steps/test_plan_summary.py``."""

from __future__ import annotations

import logging
from typing import Any

from xnat_prep import summary

SCAN = "xnat:imagescandata/"


class Listings:
    """The four listings ``collect`` reads, answering canned rows and counting calls."""

    def __init__(self, search: list[dict[str, Any]], experiments: list[dict[str, Any]] = ()) -> None:
        self.search, self.experiments, self.requests = search, list(experiments), 0
        self.calls: list[str] = []

    def _call(self, name: str, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
        self.requests += 1
        self.calls.append(name)
        return rows

    def subjects(self, project: str) -> list[dict[str, Any]]:
        return self._call("subjects", [{"ID": "XS1", "label": "S1"}, {"ID": "XS2", "label": "S2"}])

    def project_scans(self, project: str) -> list[dict[str, Any]]:
        return self._call("search", self.search)

    def project_experiments(self, project: str) -> list[dict[str, Any]]:
        return self._call("experiments", self.experiments)

    def session_files(self, session_id: str) -> list[dict[str, Any]]:
        return self._call(f"files {session_id}", [])


def row(session: str, scan: str, **extra: str) -> dict[str, Any]:
    base = {"ID": session, "label": f"L{session}", "xsiType": "xnat:mrSessionData"}
    base |= {"subject_label": "S1", "xnat:imagesessiondata/subject_id": "XS1"}
    base |= {"xnat:imagesessiondata/date": "2020-01-01"}
    return base | {f"{SCAN}id": scan, f"{SCAN}type": "T1w", f"{SCAN}series_description": "t1"} | extra


def test_sessions_from_the_search_rows_with_empty_sessions_and_resource_rows() -> None:
    listings = Listings(
        [
            row("E1", "1", **{f"{SCAN}file/label": "DICOM"}),
            row("E1", "1", **{f"{SCAN}file/label": "NIFTI"}),  # the same scan, another resource
            row("E1", "2"),
            row("E2", "", subject_label="", **{"xnat:imagesessiondata/date": ""}),  # no scans
        ]
    )
    data = summary.collect(listings, "P")  # type: ignore[arg-type]
    assert listings.calls == ["subjects", "search", "files E1"] and data.requests == 3
    assert [(s["ID"], s["label"], s["subject_label"], s["date"]) for s in data.sessions] == [
        ("E1", "LE1", "S1", "2020-01-01"),
        ("E2", "LE2", "S1", ""),  # the subject's label from the subject listing, by its ID
    ]
    assert [(s["session_id"], s["scan_id"]) for s in data.scans] == [("E1", "1"), ("E1", "2")]
    project = summary.tables([data])["projects"].iloc[0]
    assert (project["subjects"], project["sessions"], project["scans"]) == (2, 2, 2)


def test_a_search_without_session_columns_falls_back_to_the_experiment_listing(caplog) -> None:
    bare = [{"ID": "E1", f"{SCAN}id": "1", f"{SCAN}type": "T1w", f"{SCAN}series_description": "t1"}]
    experiments = [
        {"ID": "E1", "label": "LE1", "xsiType": "xnat:mrSessionData", "subject_label": "S1", "date": "2020"},
        {"ID": "E9", "label": "LE9", "xsiType": "xnat:mrSessionData", "subject_label": "S2", "date": ""},
        {"ID": "A1", "label": "LA1", "xsiType": "xnat:qcAssessmentData", "subject_label": "S2"},
    ]
    listings = Listings(bare, experiments)
    with caplog.at_level(logging.WARNING):
        data = summary.collect(listings, "P", counts_only=True)  # type: ignore[arg-type]
    assert listings.calls == ["subjects", "search", "experiments"] and data.requests == 3
    assert "no session columns" in caplog.text
    assert [s["ID"] for s in data.sessions] == ["E1", "E9"] and len(data.scans) == 1
