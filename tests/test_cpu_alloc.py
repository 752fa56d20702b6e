"""The CPU allocator setting: large freed tensors are reused without new page faults."""

import os
import subprocess
import sys

PROBE = r"""
import resource, torch
from face_iqa.cpu_alloc import tune_cpu_malloc
on = tune_cpu_malloc()
def cycle():
    t = torch.empty(16 * 2**20)  # 64 MiB, freed at once
    t.fill_(1.0)                 # touch every page
    del t
cycle()
cycle()  # the heap has grown to its working size
f0 = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(5):
    cycle()
print(on, resource.getrusage(resource.RUSAGE_SELF).ru_minflt - f0)
"""


def _faults(setting: str) -> tuple[str, int]:
    env = dict(os.environ, FACEIQA_MALLOC_TUNING=setting)
    out = subprocess.run(
        [sys.executable, "-c", PROBE], env=env, capture_output=True, text=True, check=True
    ).stdout.split()
    return out[0], int(out[1])


def test_tuning_removes_the_page_faults_of_reallocation():
    on, tuned = _faults("1")
    off, plain = _faults("0")
    assert on == "True" and off == "False"
    pages = 5 * 64 * 2**20 // 4096  # what five fresh 64 MiB mappings fault in
    assert plain > 0.8 * pages, plain  # glibc's default: every cycle faults again
    # tuned: the freed block is reused (at most one of the five cycles lands elsewhere in
    # the heap and faults once more)
    assert tuned <= 0.25 * pages, tuned
