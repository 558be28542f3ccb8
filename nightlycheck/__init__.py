"""make nightly-check: the nightly workflow (.github/workflows/nightly.yml) run
for one kernel as GitHub's runner would, in clean Debian roots, on two nights.

Each job's steps are read from the workflow itself and run chrooted in a fresh
copy of a Debian root that stands in for its runner (RUNNERS), with the
`${{ }}` expressions, `if:` conditions and job timeouts evaluated as Actions
does, and each `uses:` action replaced by a local stand-in (ACTIONS): the
checkout clones the committed HEAD, the caches and artifacts are folders under
the check's cache and build folders.  Then:

  night 1  the kernel's job (an empty harness cache the first time), the page job
  night 2  the same again: its harness cache restored by exact key, so nothing
           is downloaded or built; the page compared with night 1's: no change
  planted  the page job again, its previous night being night 1's page with one
           cell edited (a claim flipped): the change heads the page, the job fails

and says what it saw, with the two nights' job times, in
build/nightly-check/STAMP/summary.txt.  Exit 0 when every check held, 1 if one
did not, 2 on bad input.  Needs root (mmdebstrap, chroot) like make host-check.

  .venv/bin/python -m nightlycheck --kernel 6.1 [--cold]     # make nightly-check KERNEL=6.1 [ARGS=--cold]

By part: common.py (folders, the error, copies), expressions.py (`${{ }}`,
`if:`), store.py (actions/cache's entries), standins.py (the runners' and
actions' stand-ins, as rows), jobs.py (a night's jobs and their steps),
check.py (the nights and what held), main.py (the command line).
"""
