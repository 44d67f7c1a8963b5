#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: mailsec.starttls contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)

# This file only documents the action plugin of the same name, which does all the work on the controller.

from __future__ import annotations

DOCUMENTATION = r"""
module: report_merge
short_description: Merge the partial reports of sliced or batched STARTTLS audits into the fleet report
version_added: 0.1.0
description:
  - Reads every partial report (C(REPORT_BASENAME.partial-*.json)) that runs of M(mailsec.starttls.fleet_assess) with
    O(mailsec.starttls.fleet_assess#module:partial=true) wrote into O(report_dir), one per AWX job slice or
    C(--limit) batch.
  - For each host, the newest partial that assessed it counts, so a batch run again replaces its earlier run.
  - Applies the waivers and the failure rule once to the whole fleet, compares it with the previous fleet report
    (new, resolved, persisting findings with first-seen dates) and writes the fleet report in every format, exactly
    as one unsliced run would.
  - Then moves the merged partials to C(REPORT_BASENAME.merged/TIME/), so that the next round of slices starts
    clean (see O(keep_partials)).
author:
  - mailsec.starttls contributors (@mailsec)
attributes:
  action:
    description: Indicates this has a corresponding action plugin so some parts of the options can be executed on the controller.
    support: full
    details: All of it runs on the controller.
  check_mode:
    support: full
    details: Changes nothing on managed hosts; writes the reports on the controller in check mode too.
  diff_mode:
    support: none
  platform:
    description: Target operating systems.
    support: full
    platforms: posix
extends_documentation_fragment:
  - mailsec.starttls.attributes
options:
  report_dir:
    description: Directory holding the partial reports; the fleet report is written there.
    type: path
    required: true
  report_basename:
    description: File name of the reports without the suffix, as given to the partial runs.
    type: str
    default: starttls-report
  report_formats:
    description: Which reports to write.
    type: list
    elements: str
    choices: [json, junit, markdown, html]
    default: [json, junit, markdown, html]
  waivers:
    description: Waivers as for M(mailsec.starttls.fleet_assess); applied once, to the merged findings.
    type: list
    elements: dict
    default: []
  fail_when:
    description:
      - JMESPath expression over the merged report; a truthy result fails the task (after the reports are written).
      - Default, any unwaived critical or high finding.
    type: str
  fail:
    description: Fail the task when O(fail_when) is true.
    type: bool
    default: true
  previous_report:
    description:
      - The report to compare the fleet with. Defaults to the fleet report already in O(report_dir), if any.
    type: path
  compare_previous:
    description: Compare with the previous report at all.
    type: bool
    default: true
  keep_partials:
    description: Leave the merged partial reports in place.
    type: bool
    default: false
seealso:
  - module: mailsec.starttls.fleet_assess
"""

EXAMPLES = r"""
- name: REPORT | Merge the slices of tonight's audit
  mailsec.starttls.report_merge:
    report_dir: /srv/starttls-reports
    waivers:
      - query: "id == 'starttls-not-offered' && host == 'legacy-relay'"
        reason: Relay decommissioned in Q1
        expires: "2027-03-31"
  run_once: true
"""

RETURN = r"""
summary:
  description: The fleet report's summary (see docs/reports.md).
  returned: success
  type: dict
  sample: {hosts: 40, listeners: 160, probes: 320, findings: 12, unwaived: 12, waived: 0, failed: true,
           fail_reason: "3 unwaived finding(s) of severity critical or high: ..."}
changes:
  description: What changed since the previous report; counts are null without one.
  returned: success
  type: dict
  sample: {previous: {generated_at: "2026-11-27T06:00:00Z", source: /srv/starttls-reports/starttls-report.json,
                      findings: 14}, new: 1, resolved: 3, persisting: 11, not_assessed: 0}
reports:
  description: Paths of the reports written, by format.
  returned: success
  type: dict
  sample: {json: /srv/starttls-reports/starttls-report.json, html: /srv/starttls-reports/starttls-report.html}
merged:
  description: The partial reports merged.
  returned: success
  type: list
  elements: str
  sample: [/srv/starttls-reports/starttls-report.partial-4711.json, /srv/starttls-reports/starttls-report.partial-4712.json]
archived_to:
  description: Where the merged partials were moved; null with O(keep_partials=true).
  returned: success
  type: str
  sample: /srv/starttls-reports/starttls-report.merged/20261128T060000Z
waivers_expired:
  description: Waivers whose date has passed; they no longer apply.
  returned: success
  type: list
  elements: dict
  sample: []
"""
