# -*- coding: utf-8 -*-
# Copyright: mailsec.starttls contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""MTA adapters behind one interface (see base.MtaAdapter), and their registry.

Adding an MTA means adding one module with an MtaAdapter subclass and one line in ADAPTERS.
"""

from __future__ import annotations

from ansible_collections.mailsec.starttls.plugins.module_utils._mta.base import MtaAdapter, new_listener
from ansible_collections.mailsec.starttls.plugins.module_utils._mta.context import HostContext
from ansible_collections.mailsec.starttls.plugins.module_utils._mta.dovecot import DovecotAdapter
from ansible_collections.mailsec.starttls.plugins.module_utils._mta.exim import EximAdapter
from ansible_collections.mailsec.starttls.plugins.module_utils._mta.opensmtpd import OpenSmtpdAdapter
from ansible_collections.mailsec.starttls.plugins.module_utils._mta.postfix import PostfixAdapter
from ansible_collections.mailsec.starttls.plugins.module_utils._mta.sendmail import SendmailAdapter

ADAPTERS = {
    'postfix': PostfixAdapter,
    'exim': EximAdapter,
    'dovecot': DovecotAdapter,
    'opensmtpd': OpenSmtpdAdapter,
    'sendmail': SendmailAdapter,
}

MTA_NAMES = tuple(ADAPTERS)


def get_adapter(name: str) -> MtaAdapter:
    return ADAPTERS[name]()


__all__ = ['ADAPTERS', 'MTA_NAMES', 'HostContext', 'MtaAdapter', 'get_adapter', 'new_listener']
