# -*- coding: utf-8 -*-
# Copyright: mailsec.starttls contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""_remediation: the change chosen per finding under each policy, and the verification after it."""

from __future__ import annotations

import pytest

from ansible_collections.mailsec.starttls.plugins.plugin_utils import _remediation

HOST = 'mx1'


def finding(rule, address='192.0.2.25', port=25, vantage='controller', mta='postfix', instance='postfix', **extra):
    record = {'id': rule, 'host': HOST, 'vantage': vantage, 'fix': f'fix for {rule}', 'waived': False,
              'listener': {'address': address, 'port': port, 'mta': mta, 'instance': instance, 'protocol': 'smtp'}}
    record.update(extra)
    return record


def listener(address='192.0.2.25', port=25, service=None, certificate=None, usable=None, sans=(), tls_mode='starttls',
             mta='postfix', instance='postfix'):
    store = None
    if certificate:
        store = {'usable': usable, 'problems': [], 'certificate': {'describe': {'sans': list(sans)}}}
    return {'id': f'{mta}/{instance}/{service or address}/{address}:{port}', 'mta': mta, 'instance': instance,
            'service': service or f'{address}:smtp', 'address': address, 'port': port, 'tls_mode': tls_mode,
            'binding': {'certificate': certificate, 'key': certificate and certificate.replace('.crt', '.key'),
                        'chain': []}, 'store': store}


PORT25 = listener()
PORT587 = listener(port=587, service='192.0.2.25:submission', certificate='/etc/ssl/mx.crt', usable=True)
OTHER_ADDRESS = listener(address='192.0.2.26', certificate='/etc/ssl/other.crt', usable=True, sans=['DNS:mx2.example'])
SUPPLIED = [{'address': '192.0.2.25', 'port': 25, 'certificate': '/etc/ssl/new.crt', 'private_key': '/etc/ssl/new.key'}]


def only(actions):
    assert len(actions) == 1, actions
    return actions[0]


def test_auto_binds_the_supplied_certificate_first():
    action = only(_remediation.plan([finding('starttls-advertised-without-certificate')], [PORT25, PORT587], HOST,
                                    SUPPLIED))
    assert action['action'] == 'bind'
    assert action['module_args']['certificate'] == '/etc/ssl/new.crt'
    assert action['module_args']['starttls'] == 'offered'


def test_auto_reuses_a_certificate_the_instance_serves_on_the_same_address():
    action = only(_remediation.plan([finding('starttls-advertised-without-certificate')], [PORT25, PORT587], HOST))
    assert action['action'] == 'bind' and action['certificate']['certificate'] == '/etc/ssl/mx.crt'
    assert 'served by' in action['certificate']['source']


def test_auto_withdraws_when_no_certificate_fits():
    action = only(_remediation.plan([finding('starttls-advertised-without-certificate')], [PORT25, OTHER_ADDRESS],
                                    HOST))
    assert action['action'] == 'withdraw' and action['module_args']['starttls'] == 'withdrawn'
    # Names given by the user make the other certificate fit.
    fitting = only(_remediation.plan([finding('starttls-advertised-without-certificate')], [PORT25, OTHER_ADDRESS],
                                     HOST, names=['mx2.example']))
    assert fitting['action'] == 'bind'


def test_opensmtpd_listeners_are_edited_not_only_guided():
    record = listener(address='192.0.2.40', service='listen on 192.0.2.40', mta='opensmtpd', instance='opensmtpd')
    action = only(_remediation.plan([finding('starttls-advertised-without-certificate', address='192.0.2.40',
                                             mta='opensmtpd', instance='opensmtpd')], [record], HOST))
    assert action['action'] == 'withdraw'
    assert action['module_args'] == {'mta': 'opensmtpd', 'instance': 'opensmtpd', 'address': '192.0.2.40', 'port': 25,
                                     'service': 'listen on 192.0.2.40', 'starttls': 'withdrawn', 'allow_shared': False}


def test_withdraw_policy_never_binds_and_bind_policy_never_withdraws():
    findings = [finding('starttls-advertised-without-certificate')]
    assert only(_remediation.plan(findings, [PORT25, PORT587], HOST, SUPPLIED, 'withdraw'))['action'] == 'withdraw'
    assert only(_remediation.plan(findings, [PORT25, OTHER_ADDRESS], HOST, [], 'bind'))['action'] == 'unresolved'


def test_not_offered_is_offered_unless_the_policy_withdraws():
    findings = [finding('starttls-not-offered', port=587)]
    assert only(_remediation.plan(findings, [PORT587], HOST))['action'] == 'offer'
    assert only(_remediation.plan(findings, [PORT587], HOST, policy='withdraw'))['action'] == 'guidance'


def test_renewed_certificate_means_reload():
    action = only(_remediation.plan([finding('presented-certificate-differs', port=587)], [PORT587], HOST))
    assert action['action'] == 'reload' and action['reload'] is True
    assert 'starttls' not in action['module_args'] and action['module_args']['port'] == 587


def test_implicit_listener_is_disabled_only_when_asked():
    implicit = listener(port=465, service='smtps', tls_mode='implicit')
    findings = [finding('implicit-tls-without-certificate', port=465)]
    assert only(_remediation.plan(findings, [implicit], HOST))['action'] == 'guidance'
    action = only(_remediation.plan(findings, [implicit], HOST, disable_implicit=True))
    assert action['action'] == 'disable' and action['module_args']['implicit_tls'] == 'disabled'


def test_other_findings_get_guidance_and_black_box_listeners_no_edit():
    action = only(_remediation.plan([finding('middlebox-masking')], [PORT25], HOST))
    assert action['action'] == 'guidance' and action['guidance'] == ['fix for middlebox-masking']
    action = only(_remediation.plan([finding('starttls-advertised-without-certificate')], [], HOST))
    assert action['module_args'] is None


def test_stale_report_findings_and_waived_ones_are_left_alone():
    stale = finding('starttls-advertised-without-certificate')
    assert _remediation.plan([stale], [PORT25], HOST, current=[]) == []
    assert _remediation.plan([dict(stale, waived=True)], [PORT25], HOST) == []
    assert _remediation.plan({'findings': [stale]}, [PORT25], HOST, current=[stale])[0]['action'] == 'withdraw'


def test_selectors_limit_the_listeners():
    findings = [finding('starttls-advertised-without-certificate'),
                finding('starttls-advertised-without-certificate', address='192.0.2.26')]
    actions = _remediation.plan(findings, [PORT25, OTHER_ADDRESS], HOST, only=[{'address': '192.0.2.26'}])
    assert [action['listener']['address'] for action in actions] == ['192.0.2.26']


def test_outcome_needs_the_finding_gone_and_no_sibling_worse():
    actions = _remediation.plan([finding('starttls-advertised-without-certificate')], [PORT25, PORT587], HOST)
    before = [finding('starttls-advertised-without-certificate'),
              finding('legacy-tls-protocol', address='198.51.100.1', instance='other')]
    assert _remediation.outcome(actions, before, [], HOST)['ok'] is True
    remaining = _remediation.outcome(actions, before, [finding('starttls-advertised-without-certificate')], HOST)
    assert remaining['ok'] is False and remaining['remaining'][0]['listener'] == '192.0.2.25:25'
    assert remaining['evidence'][0]['id'] == 'starttls-advertised-without-certificate'
    worse = _remediation.outcome(actions, before, [finding('probe-failed', port=587)], HOST)
    assert worse['ok'] is False and worse['regressions'] == [{'listener': '192.0.2.25:587', 'rules': ['probe-failed']}]
    # A failing sibling that shows its defect through one more rule of no higher severity is not worse.
    failing = before + [finding('starttls-advertised-without-certificate', port=587, severity='critical')]
    same = _remediation.outcome(actions, failing, [finding('starttls-advertised-without-certificate', port=587,
                                                           severity='critical'),
                                                   finding('pre-tls-surplus', port=587, severity='high')], HOST)
    assert same['ok'] is True
    worse_still = _remediation.outcome(actions, [finding('starttls-advertised-without-certificate'),
                                                 finding('legacy-tls-protocol', port=587, severity='medium')],
                                       [finding('pre-tls-surplus', port=587, severity='high')], HOST)
    assert worse_still['ok'] is False
    # A listener of an instance that was not touched is not a sibling: its findings may come and go.
    unrelated = _remediation.outcome(actions, before, [finding('pre-tls-surplus', address='198.51.100.1',
                                                               instance='other')], HOST)
    assert unrelated['ok'] is True


def test_bad_input_is_an_error_not_a_crash():
    with pytest.raises(_remediation.RemediationError):
        _remediation.plan({'no': 'findings'}, [], HOST)
    with pytest.raises(_remediation.RemediationError):
        _remediation.plan([finding('starttls-advertised-without-certificate')], [PORT25], HOST, [{'port': 25}])
    with pytest.raises(_remediation.RemediationError):
        _remediation.plan([], [], HOST, policy='yolo')
