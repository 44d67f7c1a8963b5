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
    Listeners listed in the inventory (O(listeners_var)) are probed as given, and where the address map
    (O(address_map_var)) says each vantage reaches them.
  - A target given as a name, and an C(ansible_host) that is a name, are resolved with the system resolver
    on the controller; every address of the name is probed and the host owns them all.
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
  address_map_var:
    description:
      - Name of the per-host inventory variable that maps the host's listeners to where each vantage reaches
        them (NAT, a port forward, a load balancer, a proxy in front of the MTA); see C(docs/address-maps.md).
      - A list of entries. C(listener) picks the listener as the host binds it (V(198.51.100.5:25), V(*:25) for
        any address, or a dictionary with C(address), C(port) and C(service)); C(default) is where every
        vantage reaches it (V(203.0.113.25:25), V(:2525) for another port of the same address, V(own) for
        its own address and port, V(none) for no vantage); C(vantages) overrides that per vantage name
        (V(controller), V(jump:NAME)).
      - The probes of one listener from every vantage are judged together, as that listener, and their
        evidence says which listener they were C(reached_for). A listener that no vantage can reach is named
        in a warning. Inventory addresses are trusted; the host's own records never choose where to probe.
    type: str
    default: starttls_address_map
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
  dns_checks:
    description:
      - Opt-in. Read what the mail domains publish (MX, DANE TLSA, MTA-STS TXT and policy, TLS-RPT) through the
        resolvers named here (or the controller's), and judge it against every listener of each MX, the certificate
        and key bound on disk and the keys staged for renewal (C(next_keys) of M(mailsec.starttls.mta_tls_info)).
        See docs/dane-mta-sts.md. Needs dnspython on the controller.
      - With O(report_dir), the answers and the TLSA lines to publish are written to C(REPORT_BASENAME.dns.json).
    type: dict
    version_added: 0.1.0
    suboptions:
      enabled:
        description: Run the checks (a way to keep the options and switch them off).
        type: bool
        default: true
      domains:
        description: Mail domains; their MX names are checked too.
        type: list
        elements: str
        default: []
      mx_names:
        description:
          - MX names whose TLSA records are checked besides those of O(dns_checks.domains). With neither, the hosts'
            inventory names and C(ansible_host) values that are DNS names.
        type: list
        elements: str
        default: []
      resolvers:
        description:
          - Resolvers to ask (V(192.0.2.53), V(192.0.2.53:5353), V([2001:db8::53]:53)); nothing else is asked. Empty for
            the controller's /etc/resolv.conf. A validating resolver gives the DNSSEC status (its AD bit).
        type: list
        elements: str
        default: []
      ca_file:
        description: Trust anchors for the MTA-STS policy hosts' certificates instead of the system store.
        type: path
      port:
        description: The SMTP port of the TLSA records (C(_PORT._tcp.MX)).
        type: int
        default: 25
      https_port:
        description: Port of the MTA-STS policy hosts (443 but in tests).
        type: int
        default: 443
      timeout:
        description: Seconds per DNS query and per policy fetch.
        type: float
        default: 5.0
      state_file:
        description:
          - Where the MTA-STS policy digests and ids are kept between audits (a policy changed under the same id is
            a finding). Default C(REPORT_DIR/REPORT_BASENAME.mta-sts-state.json) when O(report_dir) is set.
        type: path
  vantages:
    description:
      - Inventory hosts that probe as vantages of their own (vantage V(inventory:NAME)). With O(plan_only) the
        module returns what each must probe (RV(plan)); the audit role then runs
        M(mailsec.starttls.listener_probe) on each by delegation, all at once, and passes the registered
        results back in O(vantage_probes).
      - A vantage host named here with no result in O(vantage_probes) (unreachable, failed, timed out) costs
        only its own probes and is named in a warning.
    type: list
    elements: str
    default: []
  vantage_probes:
    description:
      - The registered loop results of M(mailsec.starttls.listener_probe) delegated to the hosts in O(vantages)
        (and of their C(async_status)); each result's C(item) is the vantage's inventory name.
      - Probes are bound to the vantage that returned them (its label is overwritten) and only probes of
        targets it was given are kept.
    type: list
    elements: raw
    default: []
  plan_only:
    description: Only work out what each host in O(vantages) must probe and return it in RV(plan); no probe, no judgement.
    type: bool
    default: false
  previous_report:
    description:
      - The report (JSON) to compare this run with; every finding then says whether it is new or persisting and
        when it was first seen, and the report lists what was resolved.
      - Defaults to the fleet report already in O(report_dir) (C(REPORT_BASENAME.json)), if any, before this run
        replaces it. A path given here must exist.
    type: path
  compare_previous:
    description: Compare with the previous report at all.
    type: bool
    default: true
  partial:
    description:
      - This run is one slice or batch of the fleet (AWX job slicing, C(--limit)). Writes only a partial JSON report,
        C(REPORT_BASENAME.partial-NAME.json), into O(report_dir), does not compare with a previous report and does
        not fail by O(fail_when); M(mailsec.starttls.report_merge) merges the partials into the fleet report.
    type: bool
    default: false
  partial_name:
    description:
      - Name of the partial report (letters, digits, C(.), C(_), C(-)), for example the AWX job ID.
      - Defaults to a digest of the run's host list, so two slices never overwrite each other.
    type: str
  validate_only:
    description:
      - Only check the input (every option, the JMESPath of O(waivers) and O(fail_when), the probe options, the
        black-box listeners of every host) and remove the reports of an earlier run; probe and judge nothing.
      - The audit role runs this first, once, before any host is inspected.
    type: bool
    default: false
  role_argument_spec:
    description:
      - With O(validate_only), also check the variables of every host of the play against this entry point (for
        example V(main)) of the argument spec of the role the task runs in (its C(meta/argument_specs.yml)). Each
        host is checked with its own variables, by the validator and with the messages of Ansible's own role
        argument validation, once for the fleet instead of as a task per host.
      - A host that fails fails the task, and with it the run, before anything is inspected; the message names
        each failing host (hosts with the same errors together) and the variable.
      - The audit role sets it; the C(mailsec.starttls.audit) playbook imports the role with
        C(rolespec_validate=false), so that Ansible does not check the same again per host.
    type: str
    version_added: 0.1.0
  set_aside_only:
    description:
      - Only set aside the reports of an earlier run, as every run does first (the fleet JSON report becomes
        C(REPORT_BASENAME.previous.json), the other formats are removed; nothing with O(partial)), and return;
        nothing is checked, probed or judged.
      - The audit playbook runs this when its host pattern matches no host, before it fails.
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
  - module: mailsec.starttls.report_merge
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
plan:
  description: With O(plan_only), per host in O(vantages), the targets it must probe (the target dictionaries of listener_probe).
  returned: when O(plan_only) is true
  type: dict
  sample: {"outside-probe": [{"address": "203.0.113.25", "port": 25, "protocol": "smtp", "sni": null, "expected_names": []}]}
summary:
  description: The report summary (see docs/reports.md).
  returned: unless O(plan_only) is true
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
      vantage: host
      vantages: [host, controller]
      summary: 127.0.60.1:25/smtp advertises STARTTLS but answers 454 (seen from host); also seen from controller
      waived: false
reports:
  description: Paths of the reports written, by format.
  returned: unless O(plan_only) is true
  type: dict
  sample: {json: /srv/audit/starttls-report.json, html: /srv/audit/starttls-report.html}
waivers_expired:
  description: Waivers whose date has passed; they no longer apply.
  returned: unless O(plan_only) is true
  type: list
  elements: dict
  sample: []
dns:
  description:
    - With O(dns_checks); the resolvers asked, each domain's answers and fetched policy (without its body), each MX's
      TLSA answer and listeners, the MTA-STS state, C(tlsa_publish) (zone lines for the current and next keys) and
      C(asked) (every question put to a resolver).
    - Left out when the task fails by O(fail_when) and O(report_dir) is set (it is in C(REPORT_BASENAME.dns.json) there).
  returned: when O(dns_checks) is set and enabled
  type: dict
  sample: {resolvers: ["192.0.2.53:53"], queries: 14, tlsa_publish: ["; mx1: key bound on disk",
           "_25._tcp.mx1.example.org. IN TLSA 3 1 1 8C1F3E9A6B0D4E2F7A5C3B1D9E8F7A6B5C4D3E2F1A0B9C8D7E6F5A4B3C2D1E0F"]}
changes:
  description:
    - What changed since the previous report (see docs/reports.md); counts are null without one.
    - C(resolved_findings) is left out when the task fails by O(fail_when) (it is in the reports then).
  returned: always
  type: dict
  sample: {previous: {generated_at: "2026-11-27T06:00:00Z", source: /srv/audit/starttls-report.json, findings: 3},
           new: 1, resolved: 2, persisting: 1, not_assessed: 0}
outcome:
  description:
    - How the run ended, C(passed), C(policy-failed), C(invalid-input), C(nothing-audited) or C(unreachable);
      C(validated) with O(validate_only), C(set-aside) with O(set_aside_only).
  returned: always
  type: str
  sample: policy-failed
probes:
  description: How many probes were made from the controller and the jump hosts.
  returned: unless O(plan_only) is true
  type: int
  sample: 8
"""
