# Copyright: mailsec.starttls contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The engine row of bench_probe.py: a Python program that runs probe_many and nothing else.

`engine_worker.py JOB`: reads the job (targets, options, where the collection is, where to write),
calls probe_many once and writes the records with its own figures (wall and CPU of the call, this
process and the probe processes it forked, GC). Standard library only and small on purpose: what
the row measures beyond the call is the interpreter's start-up and the engine's imports, not the
bench's own code (bench_probe.py as a script costs 50-60 ms to compile and import).
"""

from __future__ import annotations

import json
import resource
import sys
import time


def engine_worker(job_path: str) -> int:
    with open(job_path, encoding='utf-8') as job_file:
        job = json.load(job_file)
    sys.path.insert(0, job['collections_parent'])
    output: dict = {}
    try:
        from ansible_collections.mailsec.starttls.plugins.module_utils._probe.engine import probe_many
    except Exception as error:  # an engine that does not import is a result of the bench, not a crash
        output['error'] = f'import failed: {type(error).__name__}: {error}'
        probe_many = None
    if probe_many is not None:
        profiler = None
        if job.get('profile') == 'cprofile':
            import cProfile
            profiler = cProfile.Profile()
        import gc
        gc_state = {'collections': 0, 'seconds': 0.0, 'started': 0.0}

        def on_gc(phase: str, info: dict) -> None:
            if phase == 'start':
                gc_state['started'] = time.perf_counter()
            else:
                gc_state['collections'] += 1
                gc_state['seconds'] += time.perf_counter() - gc_state['started']
        gc.callbacks.append(on_gc)
        # No sampling thread here: the engine forks its probe processes only from a process that runs
        # no other thread (a sampler would keep every run in one process).
        usage_before = resource.getrusage(resource.RUSAGE_SELF)
        started = time.perf_counter()
        try:
            if profiler:
                profiler.enable()
            probes = probe_many(job['targets'], job['options'])
        except Exception as error:
            output['error'] = f'probe_many raised {type(error).__name__}: {error}'
            probes = None
        finally:
            if profiler:
                profiler.disable()
        wall_s = time.perf_counter() - started
        usage_after = resource.getrusage(resource.RUSAGE_SELF)
        children = resource.getrusage(resource.RUSAGE_CHILDREN)
        gc.callbacks.remove(on_gc)
        output.update(
            wall_s=wall_s,
            cpu_s=(usage_after.ru_utime - usage_before.ru_utime) + (usage_after.ru_stime - usage_before.ru_stime)
            + children.ru_utime + children.ru_stime,
            peak_rss_kib=max(usage_after.ru_maxrss, children.ru_maxrss), rss_before_kib=usage_before.ru_maxrss,
            user_s=usage_after.ru_utime - usage_before.ru_utime, sys_s=usage_after.ru_stime - usage_before.ru_stime,
            voluntary_switches=usage_after.ru_nvcsw - usage_before.ru_nvcsw,
            involuntary_switches=usage_after.ru_nivcsw - usage_before.ru_nivcsw,
            gc_collections=gc_state['collections'], gc_s=gc_state['seconds'],
            probes=probes)
        if profiler:
            import io
            import pstats
            profiler.dump_stats(job['output'] + '.prof')
            text = io.StringIO()
            pstats.Stats(profiler, stream=text).sort_stats('tottime').print_stats(40)
            output['profile_text'] = text.getvalue()
    with open(job['output'], 'w', encoding='utf-8') as output_file:
        json.dump(output, output_file, default=repr)
    return 0


if __name__ == '__main__':
    sys.exit(engine_worker(sys.argv[1]))
