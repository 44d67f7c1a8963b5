# -*- coding: utf-8 -*-
# Copyright: mailsec.starttls contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Merge the partial reports of sliced or batched audit runs into the fleet report.

Documentation: plugins/modules/report_merge.py. Runs on the controller only.
"""

from __future__ import annotations

import os

from ansible.errors import AnsibleActionFail
from ansible.module_utils.common.arg_spec import ArgumentSpecValidator
from ansible.plugins.action import ActionBase

from ansible_collections.mailsec.starttls.plugins.plugin_utils import _changes, _merge, _policy, _reports

ARGUMENT_SPEC = {
    'report_dir': {'type': 'path', 'required': True},
    'report_basename': {'type': 'str', 'default': _reports.DEFAULT_BASENAME},
    'report_formats': {'type': 'list', 'elements': 'str', 'default': list(_reports.FORMATS),
                       'choices': list(_reports.FORMATS)},
    'waivers': {'type': 'list', 'elements': 'dict', 'default': []},
    'fail_when': {'type': 'str'},
    'fail': {'type': 'bool', 'default': True},
    'previous_report': {'type': 'path'},
    'compare_previous': {'type': 'bool', 'default': True},
    'keep_partials': {'type': 'bool', 'default': False},
}


class ActionModule(ActionBase):

    _supports_check_mode = True
    _supports_async = False

    def run(self, tmp=None, task_vars=None):
        result = super().run(tmp, task_vars)
        validation = ArgumentSpecValidator(ARGUMENT_SPEC).validate(self._task.args)
        if validation.error_messages:
            raise AnsibleActionFail(f'report_merge: {"; ".join(validation.error_messages)}')
        args = validation.validated_parameters
        directory, basename = args['report_dir'], args['report_basename']
        try:
            _policy.check_policy(args['waivers'], args['fail_when'])
            paths = _merge.find_partials(directory, basename)
            if not paths:
                raise _merge.MergeError(f'no partial reports ({basename}{_merge.PARTIAL_INFIX}*.json) in {directory}; '
                                        'run the audit with starttls_partial: true first')
            partials = [_merge.load_partial(path) for path in paths]
            previous = None
            if args['compare_previous']:
                previous = _changes.load_previous(args['previous_report'] or os.path.join(directory, basename + '.json'),
                                                  required=bool(args['previous_report']))
            report = _merge.merge(partials, args['waivers'], args['fail_when'],
                                  {'check_mode': bool(self._task.check_mode)}, previous)
            written = _reports.write_reports(report, directory, args['report_formats'], basename)
            archive = None if args['keep_partials'] else _merge.archive_partials(paths, directory, basename,
                                                                                 report['generated_at'])
        except (_merge.MergeError, _changes.PreviousReportError, _policy.PolicyError, _reports.ReportError) as exc:
            raise AnsibleActionFail(str(exc))

        summary = report['summary']
        result.update(changed=False, summary=summary, changes=report['changes'], reports=written, merged=paths,
                      archived_to=archive, waivers_expired=report['waivers_expired'])
        if summary['failed'] and args['fail']:
            result['failed'] = True
            result['msg'] = (f"STARTTLS audit failed: {summary['fail_reason']} (merged {len(paths)} partial report(s); "
                             f"reports: {', '.join(written.values())})")
        else:
            result['msg'] = (f"merged {len(paths)} partial report(s): {summary['findings']} finding(s), "
                             f"{summary['unwaived']} unwaived, on {summary['listeners']} listener(s) of "
                             f"{summary['hosts']} host(s)")
        return result
