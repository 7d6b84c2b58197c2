"""The baseline: download a study the way the XNAT/xnatpy tutorials show it.

One xnatpy session, a sequential loop over the subject list, ``experiment.download_dir()`` for
each of the subject's sessions (one zip of all its scans, unpacked). Deliberately nothing
clever: this is the script most studies start from. Credentials come from XNAT_USER/XNAT_PASS.

    python bench/tutorial_download.py HOST PROJECT SUBJECTS.txt DEST
"""

import os
import sys

import xnat


def main(host: str, project_id: str, subject_list: str, dest: str) -> None:
    with open(subject_list) as fh:
        labels = [line.strip() for line in fh if line.strip()]
    with xnat.connect(host, user=os.environ["XNAT_USER"], password=os.environ["XNAT_PASS"]) as session:
        project = session.projects[project_id]
        for label in labels:
            subject = project.subjects[label]
            for experiment in subject.experiments.values():
                experiment.download_dir(dest, verbose=False)


if __name__ == "__main__":
    main(*sys.argv[1:5])
