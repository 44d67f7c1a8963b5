#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: mailsec.starttls contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)

# This file only documents the action plugin of the same name, which does all the work on the controller.

from __future__ import annotations

DOCUMENTATION = r"""
module: fleet_assess
short_description: Probe every listener of the fleet from the controller, judge once and write the reports
version_added: 0.1.0
description:
  - The controller half of the STARTTLS audit, meant to run once per play (C(run_once)).
  - Reads each host's evidence from M(mailsec.starttls.mta_tls_info) (the registered variable named by
    O(host_evidence_var)); for a host without it (black-box mode, for a third-party MX or an Exchange server)
    reads its listeners from the inventory variable named by O(listeners_var).
  - Probes every listener of every host once (deduplicated by address, port and protocol) from the
    controller and through each jump host, then judges listeners and probes together, applies the waivers,
    evaluates the failure rule and writes the reports (JSON, JUnit XML, Markdown, HTML).
  - A listener bound to a loopback address is probed from the controller only when the host is reached with
    the C(local) connection; otherwise only the host's own probe sees it.
  - A managed host is not trusted to say whose evidence it sends. Every record of its result is bound to its
    inventory name (a C(host) field in the records is overwritten), and the controller probes for it only
    addresses the inventory says it owns - C(ansible_host) (or the inventory name) and the addresses in the
    variable named by O(addresses_var) - plus, for the C(local) connection, loopback addresses. A listener
    the host reports on any other address is judged from the host's evidence alone and named in a warning.
    Listeners listed in the inventory (O(listeners_var)) are probed as given.
  - A record that cannot be read (a list as C(port), a string as C(binding), an unknown C(protocol)) becomes
    one C(judgement-error) finding for its host; the other records and hosts are judged as usual.
  - Runs in check mode like in normal mode, because it changes nothing on any host; the reports are its output.
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
  hosts:
    description: Hosts to judge; defaults to every host of the play (C(ansible_play_hosts_all)).
    type: list
    elements: str
  host_evidence_var:
    description: Name of the per-host variable holding the registered result of M(mailsec.starttls.mta_tls_info).
    type: str
    default: starttls_host
  listeners_var:
    description:
      - Name of the per-host inventory variable that lists the listeners of a host judged from the network
        alone, in the target forms of M(mailsec.starttls.listener_probe) (V(192.0.2.25:25), or dictionaries).
    type: str
    default: starttls_listeners
  addresses_var:
    description:
      - Name of the per-host inventory variable that lists further addresses the host owns (a multi-homed mail
        server whose listeners are bound to addresses other than C(ansible_host)). Only inventory addresses are
        probed for a host; addresses its own records name are not trusted.
      - Addresses are compared as written (IP literals in one spelling, names case-insensitively), without
        DNS; when C(ansible_host) is a name, list the IP addresses the listeners bind here.
    type: str
    default: starttls_addresses
  controller_probe:
    description: Probe every listener from the controller (vantage V(controller)).
    type: bool
    default: true
  jump_hosts:
    description:
      - Also probe every listener through each of these SSH jump hosts (vantage V(jump:NAME)); the keys are
        those of O(mailsec.starttls.listener_probe#module:jump_host), plus C(name).
    type: list
    elements: dict
    default: []
  probe_options:
    description: Options for the probes, as for M(mailsec.starttls.listener_probe) (C(timeout), C(concurrency), ...).
    type: dict
    default: {}
  expiring_days:
    description: A certificate that ends within this many days is reported as expiring.
    type: int
    default: 30
  starttls_not_offered_severity:
    description: Severity of C(starttls-not-offered) (a usable certificate bound, STARTTLS not advertised).
    type: str
    choices: [critical, high, medium, low, info]
    default: medium
  severity:
    description: Site policy that raises or lowers the severity of any finding ID.
    type: dict
    default: {}
  waivers:
    description:
      - Accepted findings. The first waiver whose O(waivers[].query) is true for a finding waives it; an expired
        waiver stops applying and is listed in the report. See docs/policy.md.
    type: list
    elements: dict
    default: []
    suboptions:
      query:
        description: JMESPath expression evaluated against each finding; a truthy result waives it.
        type: str
        required: true
      reason:
        description: Why the finding is accepted; shown next to it in every report.
        type: str
        required: true
      expires:
        description: Last day the waiver applies, C(YYYY-MM-DD) (UTC); a YAML date is accepted too.
        type: raw
      ticket:
        description: A change or risk ticket, shown with the reason.
        type: str
  fail_when:
    description:
      - JMESPath expression over the whole report; a truthy result fails the task (after the reports are written).
      - The default fails on any unwaived finding of severity C(critical) or C(high); its expression is in docs/policy.md
        and in the report's C(summary.fail_when).
    type: str
  fail:
    description: Fail the task when O(fail_when) is true. With V(false) the outcome is only reported.
    type: bool
    default: true
  report_dir:
    description: Directory on the controller for the reports; none are written without it.
    type: path
  report_formats:
    description: Which reports to write.
    type: list
    elements: str
    choices: [json, junit, markdown, html]
    default: [json, junit, markdown, html]
  report_basename:
    description: File name of the reports without the suffix.
    type: str
    default: starttls-report
  validate_only:
    description:
      - Only check the input (every option, the JMESPath of O(waivers) and O(fail_when), the probe options, the
        black-box listeners of every host) and remove the reports of an earlier run; probe and judge nothing.
      - The audit role runs this first, once, before any host is inspected.
    type: bool
    default: false
  require_audited:
    description:
      - Fail when the run looked at nothing (no host, no listener, no probe made or none answered; see the notes).
      - The remediate role sets V(false) - it judges one host at a time, and a host without listeners has nothing to fix.
    type: bool
    default: true
notes:
  - Every run first removes the reports of an earlier run (O(report_basename) with each suffix) from O(report_dir), so
    that a run that fails before writing leaves no report that could pass for its own.
  - An audit that looked at nothing fails with its own message, which starts with C(STARTTLS audit error), and its own
    RV(outcome) - no host, no listener or no probe made (RV(outcome=nothing-audited)), no probe answered
    (RV(outcome=unreachable)); broken input fails in the same way (RV(outcome=invalid-input)); the failure rule fails
    with C(STARTTLS audit failed) (RV(outcome=policy-failed)). No report is written in the error cases. See docs/ci.md.
  - Progress and the summary are printed at the default verbosity. The plugin runs inside the controller's process,
    so C(async) does not apply to it; run the playbook in the background instead (docs/ci.md).
seealso:
  - module: mailsec.starttls.mta_tls_info
  - module: mailsec.starttls.listener_probe
"""

EXAMPLES = r"""
- name: AUDIT | Probe, judge and report for the whole fleet
  mailsec.starttls.fleet_assess:
    report_dir: "{{ playbook_dir }}/reports"
    waivers:
      - query: "id == 'starttls-not-offered' && host == 'legacy-relay'"
        reason: Relay decommissioned in Q1
        expires: "2027-03-31"
  run_once: true
"""

RETURN = r"""
summary:
  description: The report summary (see docs/reports.md).
  returned: always
  type: dict
  sample: {hosts: 1, listeners: 4, probes: 8, findings: 2, by_severity: {critical: 1, high: 0, medium: 1, low: 0, info: 0},
           unwaived: 2, waived: 0, failed: true, fail_reason: "1 unwaived critical finding"}
findings:
  description:
    - Every finding with its stable ID, severity, host, listener, vantage, summary, evidence, fix and waiver state.
    - Left out when the task fails by O(fail_when) (they are in the reports then); set O(fail=false) to register them.
  returned: when the task does not fail
  type: list
  elements: dict
  sample:
    - id: starttls-advertised-without-certificate
      severity: critical
      host: demo-mail
      listener: {address: 127.0.60.1, port: 25, protocol: smtp, mta: postfix}
      vantage: controller
      summary: 127.0.60.1:25/smtp advertises STARTTLS but answers 454
      waived: false
reports:
  description: Paths of the reports written, by format.
  returned: always
  type: dict
  sample: {json: /srv/audit/starttls-report.json, html: /srv/audit/starttls-report.html}
waivers_expired:
  description: Waivers whose date has passed; they no longer apply.
  returned: always
  type: list
  elements: dict
  sample: []
outcome:
  description:
    - How the run ended, C(passed), C(policy-failed), C(invalid-input), C(nothing-audited) or C(unreachable);
      C(validated) with O(validate_only).
  returned: always
  type: str
  sample: policy-failed
probes:
  description: How many probes were made from the controller and the jump hosts.
  returned: always
  type: int
  sample: 8
"""
