#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: mailsec.starttls contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
module: listener_probe
short_description: Probe mail listeners for what they advertise and do when asked for TLS
version_added: 0.1.0
description:
  - Connects to each mail listener, reads its greeting, asks for its capabilities (C(EHLO), C(LHLO),
    C(CAPABILITY), C(CAPA) or the ManageSieve greeting), sends STARTTLS when it is advertised, completes
    the TLS handshake, records the presented certificate and asks for the capabilities again under TLS.
  - Implicit TLS listeners (465, 993, 995) are handshaken first and then greeted.
  - The dialog is lockstep (never pipelined, never before the greeting), every read is capped in size and
    time, and exactly one TLS handshake is made per listener. Chains are verified afterwards, without
    a second handshake.
  - A listener that misbehaves (refuses, hangs, sends garbage, injects bytes) yields a classified probe
    with the stage it happened in; the module fails only for arguments it cannot use.
  - Runs with the Python standard library alone; verifies chains with the C(openssl) command, and with
    C(cryptography) where the command is missing, where enough chains are verified for its import to pay off,
    or from the first chain when more than 100 targets are given. Probes meeting one chain verify it once.
  - A target given as a host name is resolved with the system resolver (C(getaddrinfo); the hosts file,
    then DNS as C(nsswitch.conf) says) and every address it has is probed as a listener of its own, in the
    resolver's order; each result names the address in C(target.address) of RV(probes) and the name in
    C(target.name). Through O(jump_host) the jump host resolves the name. IP literals are never
    looked up, forward or reverse.
author:
  - mailsec.starttls contributors (@mailsec)
extends_documentation_fragment:
  - mailsec.starttls.attributes
  - mailsec.starttls.attributes.INFO_MODULE
  - mailsec.starttls.attributes.PROBE
attributes:
  platform:
    description: Target operating systems.
    support: full
    platforms: posix
options:
  targets:
    description:
      - Listeners to probe, in the order the results come back (a name gives one result per address).
      - Either a string V(address:port/protocol) (IPv6 in brackets, V([::1]:25/smtp); the port or the
        protocol may be left out when the other implies it) or a dictionary with the keys below.
      - A dictionary has the keys C(address) (required), C(port), C(protocol), C(sni) and C(expected_names).
      - 'C(protocol) is one of V(smtp), V(submission), V(lmtp), V(smtps), V(imap), V(imaps),
        V(pop3), V(pop3s), V(sieve); when left out it is inferred from a well-known port
        (25, 587, 24, 465, 143, 993, 110, 995, 4190).'
      - C(sni) is sent as TLS server name indication (not for IP literals).
      - C(expected_names) are the names the certificate must match (defaults to the SNI).
    type: list
    elements: raw
    required: true
  jump_host:
    description:
      - Probe through this SSH server instead of from where the module runs (SSH C(direct-tcpip)
        channels over one connection; the jump host needs no Python, only C(AllowTcpForwarding)).
      - Needs the C(paramiko) Python library where the module runs (normally the controller, with
        C(delegate_to=localhost)).
      - When the jump host cannot be reached or refuses the login, every probe says so as a
        C(connect) error; the module does not fail.
      - O(vantage) defaults to V(jump:HOST).
    type: dict
    suboptions:
      host:
        description: Address or name of the jump host.
        type: str
        required: true
      port:
        description: SSH port.
        type: int
        default: 22
      user:
        description: Login name; defaults to the local user.
        type: str
      private_key_file:
        description: Private key for the login; without it and without O(jump_host.password) the SSH agent and the default keys are tried.
        type: path
      password:
        description: Password for the login.
        type: str
      known_hosts_file:
        description: Known hosts file to trust in addition to the user's.
        type: path
      max_channels:
        description:
          - Channels open at once over the one SSH connection; probes beyond it wait for a free channel.
          - The default follows OpenSSH's C(MaxSessions) default. OpenSSH counts only sessions against
            C(MaxSessions), not forwarded channels, but other SSH servers and bastions cap channels per
            connection; raise it where the jump host allows more.
        type: int
        default: 10
      host_key_checking:
        description:
          - Refuse a jump host whose key is not known. Setting it to V(false) accepts any key, which lets
            a machine in the middle see every probe; do so only in a lab.
        type: bool
        default: true
  detail:
    description:
      - How much of each probe record to return.
      - V(compact) keeps what tells what the listener did (target, greeting, whether STARTTLS was advertised
        and its reply, the handshake, the certificate's identity, names, validity and verification, flags,
        the error and the total time), every key the judgement decides by. It is about half the size of a
        full record, and Ansible's handling of a large result on the controller costs in proportion.
      - V(full) adds the capability lists before and after TLS, the reply that carried them, the certificate's
        issuer, key, serial, signature algorithm, chain length and DANE digests (C(tlsa_chain)), and the time
        of every stage. The judgement finds the same faults in compact records, but its evidence and the DANE
        check read what only full records have; the audit role asks its vantage hosts for full records.
      - The RV(summary) counts are the same with either.
    type: str
    choices: [compact, full]
    default: compact
    version_added: 0.1.0
requirements:
  - paramiko (only with O(jump_host))
seealso:
  - module: mailsec.starttls.mta_tls_info
  - name: RFC 3207 (SMTP STARTTLS)
    description: Advertising, the 220/454/501 replies and the rules after TLS.
    link: https://www.rfc-editor.org/rfc/rfc3207
  - name: Microsoft KB Q237327
    description: STARTTLS advertised on an address without a certificate; every client that accepted it failed.
    link: https://helparchive.huntertur.net/document/94065
"""

EXAMPLES = r"""
- name: AUDIT | Probe the submission and IMAP listeners of a host from the controller
  mailsec.starttls.listener_probe:
    targets:
      - 192.0.2.25:587
      - address: 192.0.2.25
        port: 143
        protocol: imap
        expected_names: [mail.example.org]
    vantage: controller
  delegate_to: localhost
  register: starttls_probe

- name: AUDIT | Fail when a listener advertises STARTTLS but cannot complete it
  ansible.builtin.assert:
    that: >-
      starttls_probe.probes
      | selectattr('starttls_advertised', 'true')
      | rejectattr('tls.established', 'true')
      | list | length == 0

- name: AUDIT | See through a firewall that masks STARTTLS, with three attempts against a pool
  mailsec.starttls.listener_probe:
    targets: ['[2001:db8::25]:25/smtp']
    try_starttls_when_not_advertised: true
    attempts: 3
"""

RETURN = r"""
probes:
  description:
    - One probe per target, in the order of O(targets).
    - With O(detail=full) every key below is there in every record.
    - With O(detail=compact) (the default) a record is the full record without C(capabilities),
      C(capabilities_after_tls) and C(capabilities_reply) (kept when the server refused EHLO, flag
      V(ehlo_rejected)), with only C(total) in C(timings_ms), and with a C(certificate) of only C(sha256),
      C(subject), C(sans), C(not_before), C(not_after), C(days_left), C(expired), C(self_signed), C(verified),
      C(verify_error), C(hostname_match) (and C(error) when the certificate could not be read). Every other
      key is there with the same value as in the full record.
  returned: always
  type: list
  elements: dict
  sample:
    - target: {"address": "127.0.60.1", "port": 25, "protocol": "smtp", "sni": null, "name": null}
      vantage: controller
      tls_mode: starttls
      connected: true
      peer_address: 127.0.60.1
      greeting: {"code": "220", "lines": ["mail.lab.test ESMTP Postfix"]}
      starttls_advertised: true
      starttls_reply: {"code": "220", "text": "2.0.0 Ready to start TLS"}
      pre_tls_surplus: null
      injected_reply: null
      tls: {"established": true, "version": "TLSv1.3", "cipher": "TLS_AES_256_GCM_SHA384", "error": null, "sni": null}
      certificate:
        sha256: 5f1c0e...
        subject: CN=mail.lab.test
        sans: ["DNS:mail.lab.test", "IP:127.0.60.1"]
        not_before: "2026-11-28T00:00:00Z"
        not_after: "2027-11-28T00:00:00Z"
        days_left: 365
        expired: false
        self_signed: false
        verified: true
        verify_error: null
        hostname_match: null
      flags: []
      error: null
      timings_ms: {"total": 6.3}
      attempts: []
  contains:
    target:
      description:
        - The listener as probed. C(address) is the address connected to; C(name) is the host name the target
          was given as (one probe per address the name resolved to), null for an IP literal.
      type: dict
      sample: {"address": "127.0.60.1", "port": 25, "protocol": "smtp", "sni": null, "name": null}
    vantage:
      description: Where the probe came from.
      type: str
      sample: controller
    tls_mode:
      description: V(starttls) or V(implicit), from the protocol.
      type: str
      sample: starttls
    connected:
      description: Whether the TCP connection was made.
      type: bool
      sample: true
    peer_address:
      description: The address connected to (for a name, the one that answered).
      type: str
      sample: 127.0.60.1
    greeting:
      description: The greeting, with the reply code (V(220); V(OK)/V(PREAUTH)/V(BYE) for IMAP; V(+OK)/V(-ERR) for POP3).
      type: dict
      sample: {"code": "220", "lines": ["mail.lab.test ESMTP Postfix"]}
    capabilities:
      description:
        - Capabilities before TLS (EHLO keywords with their parameters, IMAP capability atoms, POP3 CAPA lines,
          ManageSieve capabilities).
        - Only with O(detail=full).
      type: list
      elements: str
      sample: ["PIPELINING", "SIZE 10240000", "STARTTLS", "8BITMIME"]
    capabilities_reply:
      description: The reply that carried the capabilities (shows a rejected EHLO). With O(detail=compact) only when EHLO was refused.
      type: dict
      sample: {"code": "250", "text": "mail.lab.test\nPIPELINING\nSTARTTLS"}
    capabilities_after_tls:
      description: Capabilities asked for again under TLS; null when TLS was not established. Only with O(detail=full).
      type: list
      elements: str
      sample: ["PIPELINING", "SIZE 10240000", "AUTH PLAIN"]
    starttls_advertised:
      description: Whether STARTTLS (POP3 STLS) was advertised; null for implicit TLS or when the dialog never got that far.
      type: bool
      sample: true
    starttls_reply:
      description: The one reply to STARTTLS; the code is a string (V(220), V(454); V(OK)/V(NO)/V(BAD)/V(BYE); V(+OK)/V(-ERR)).
      type: dict
      sample: {"code": "454", "text": "4.7.0 TLS not available due to local problem"}
    pre_tls_surplus:
      description: Bytes that came after the STARTTLS reply and before TLS (response injection); discarded, never parsed.
      type: str
      sample: null
    injected_reply:
      description: With O(test_command_injection), what the server answered under TLS to the command sent before it.
      type: str
      sample: null
    tls:
      description: The handshake; null when none was attempted.
      type: dict
      sample: {"established": true, "version": "TLSv1.3", "cipher": "TLS_AES_256_GCM_SHA384", "error": null, "sni": null}
    certificate:
      description:
        - The presented leaf certificate, with the verification of the whole presented chain against the
          trust store (O(ca_file), O(ca_path) or the system store). Null when none was presented.
        - C(hostname_match) is null when no name was expected.
        - With O(detail=compact) only C(sha256), C(subject), C(sans), C(not_before), C(not_after), C(days_left),
          C(expired), C(self_signed), C(verified), C(verify_error), C(hostname_match), and C(error) when it is set.
        - C(tlsa_chain) (only with O(detail=full)) lists the SHA-256 and SHA-512 digests of every presented
          certificate and its public key, leaf first, for DANE TLSA records.
      type: dict
      sample:
        sha256: 5f1c0e...
        subject: CN=mail.lab.test
        issuer: CN=mailsec lab CA
        sans: ["DNS:mail.lab.test", "IP:127.0.60.1"]
        serial: 1a2b
        not_before: "2026-11-28T00:00:00Z"
        not_after: "2027-11-28T00:00:00Z"
        days_left: 365
        expired: false
        self_signed: false
        key_type: RSA
        key_bits: 2048
        signature_algorithm: sha256WithRSAEncryption
        chain_length: 1
        verified: false
        verify_error: unable to get local issuer certificate
        hostname_match: null
        error: null
    flags:
      description:
        - Tags for what was seen, from V(masked), V(response_injection), V(command_injection),
          V(malformed_reply), V(timeout), V(greeting_refused), V(ehlo_rejected), V(legacy_tls),
          V(starttls_after_tls), V(no_certificate), V(connection_closed), V(inconsistent).
      type: list
      elements: str
      sample: []
    error:
      description:
        - What stopped the dialog and in which stage (V(connect), V(greeting), V(capabilities), V(starttls),
          V(handshake), V(post_tls)); null when nothing did.
      type: dict
      sample: {"stage": "handshake", "message": "connection closed during the TLS handshake"}
    timings_ms:
      description: Milliseconds spent per stage, and in all; with O(detail=compact) only C(total).
      type: dict
      sample: {"connect": 0.2, "greeting": 1.1, "capabilities": 0.6, "starttls": 0.4, "handshake": 3.2, "post_tls": 0.5, "total": 6.3}
    attempts:
      description: With O(attempts) above 1, the outcome of each attempt in short.
      type: list
      elements: dict
      sample: []
detail:
  description: The shape of the records in RV(probes), as O(detail) asked.
  returned: always
  type: str
  sample: compact
summary:
  description: Counts over all probes.
  returned: always
  type: dict
  sample: {"targets": 2, "connected": 2, "starttls_advertised": 2, "tls_established": 1, "errors": 1}
"""

from ansible.module_utils.basic import AnsibleModule, missing_required_lib

# First: importing it makes the collection's imports below compile each source once (see _zipload).
from ansible_collections.mailsec.starttls.plugins.module_utils import _zipload  # noqa: F401 pylint: disable=unused-import
from ansible_collections.mailsec.starttls.plugins.module_utils._probe.engine import (
    DEFAULT_OPTIONS,
    TargetError,
    normalise_options,
    parse_targets,
    probe_many,
    summarise,
)
from ansible_collections.mailsec.starttls.plugins.module_utils._probe.detail import DEFAULT_DETAIL, DETAIL_LEVELS, shape
from ansible_collections.mailsec.starttls.plugins.module_utils._probe.ssh import (
    JUMP_HOST_ARGUMENT_SPEC,
    jump_connector,
    paramiko_import_error,
)
from ansible_collections.mailsec.starttls.plugins.module_utils._probe.validate import jump_host as check_jump_host


def main() -> None:
    module = AnsibleModule(
        argument_spec={
            'targets': {'type': 'list', 'elements': 'raw', 'required': True},
            'ehlo_name': {'type': 'str'},
            'timeout': {'type': 'float', 'default': DEFAULT_OPTIONS['timeout']},
            'greeting_timeout': {'type': 'float', 'default': DEFAULT_OPTIONS['greeting_timeout']},
            'deadline': {'type': 'float', 'default': DEFAULT_OPTIONS['deadline']},
            'concurrency': {'type': 'int', 'default': DEFAULT_OPTIONS['concurrency']},
            'per_host_limit': {'type': 'int', 'default': DEFAULT_OPTIONS['per_host_limit']},
            'processes': {'type': 'int'},
            'attempts': {'type': 'int', 'default': DEFAULT_OPTIONS['attempts']},
            'ca_file': {'type': 'path'},
            'ca_path': {'type': 'path'},
            'vantage': {'type': 'str'},
            'try_starttls_when_not_advertised': {'type': 'bool', 'default': False},
            'test_command_injection': {'type': 'bool', 'default': False},
            'source_address': {'type': 'str'},
            'jump_host': {'type': 'dict', 'options': JUMP_HOST_ARGUMENT_SPEC},
            'detail': {'type': 'str', 'choices': list(DETAIL_LEVELS), 'default': DEFAULT_DETAIL},
        },
        supports_check_mode=True,
    )
    options = {key: module.params[key] for key in DEFAULT_OPTIONS}
    jump_spec = module.params['jump_host']
    try:
        # Every value is checked before the first connection, the jump host's included.
        checked = normalise_options(options)
        targets = parse_targets(module.params['targets'])
        if jump_spec:
            jump_spec = check_jump_host(jump_spec)
    except TargetError as exc:
        module.fail_json(msg=str(exc))
    connect, jump = None, None
    if jump_spec:
        import_error = paramiko_import_error()
        if import_error is not None:
            module.fail_json(msg=missing_required_lib('paramiko'), exception=import_error)
        connect, jump = jump_connector(jump_spec, checked['timeout'])
        options['vantage'] = options['vantage'] or f"jump:{jump_spec['host']}"
    try:
        probes = probe_many(targets, options, connect=connect,
                            max_parallel=jump.max_channels if jump is not None else None)
    except TargetError as exc:
        module.fail_json(msg=str(exc))
    finally:
        if jump is not None:
            jump.close()
    module.exit_json(changed=False, probes=shape(probes, module.params['detail']), summary=summarise(probes),
                     detail=module.params['detail'])


if __name__ == '__main__':
    main()
