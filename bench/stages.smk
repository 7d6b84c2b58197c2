# The project's workflow plus two target rules, so one stage can be run and timed on its own:
#   snakemake --snakefile bench/stages.smk download_stage   (discovery + every download job)
#   snakemake --snakefile bench/stages.smk convert_stage    (+ every convert job)
# The obvious ways do not work with the discover checkpoint in Snakemake 9.27: `--until
# download_session` and `--omit-from convert_session` select jobs before the checkpoint has run and
# answer "Nothing to be done", and naming the receipts as targets fails ("Rule parameter depends
# on checkpoint but checkpoint output is not defined as input file for the rule"). An input
# function that asks the checkpoint (the workflow's own get_sessions()) lets Snakemake order it.


include: "../workflow/Snakefile"


rule download_stage:
    input:
        lambda wildcards: [f"{ROOT}/dicom/{'/'.join(key)}.json" for key in get_sessions()],


rule convert_stage:
    input:
        lambda wildcards: [f"{ROOT}/nifti/{'/'.join(key)}.json" for key in get_sessions()],
