# -*- coding: utf-8 -*-
# Copyright: mailsec.starttls contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""A small JSON Schema (2020-12) checker for the keywords docs/report.schema.json uses, so that the
report can be validated without the jsonschema package. It refuses a schema that uses any other
validation keyword, so that nothing is silently skipped."""

from __future__ import annotations

import re

ANNOTATIONS = {'$schema', '$id', 'title', 'description', '$defs', 'default', 'examples'}
SUPPORTED = {'type', 'const', 'enum', 'properties', 'required', 'additionalProperties', 'items', 'minimum',
             'pattern', '$ref', 'allOf', 'anyOf', 'oneOf'}

TYPES = {
    'object': lambda value: isinstance(value, dict),
    'array': lambda value: isinstance(value, list),
    'string': lambda value: isinstance(value, str),
    'integer': lambda value: isinstance(value, int) and not isinstance(value, bool),
    'number': lambda value: isinstance(value, (int, float)) and not isinstance(value, bool),
    'boolean': lambda value: isinstance(value, bool),
    'null': lambda value: value is None,
}


def unsupported_keywords(schema, path='#') -> list:
    found = []
    if isinstance(schema, dict):
        for key, value in schema.items():
            if key not in SUPPORTED and key not in ANNOTATIONS:
                found.append(f'{path}/{key}')
            if key in ('properties', '$defs'):
                for name, sub in value.items():
                    found.extend(unsupported_keywords(sub, f'{path}/{key}/{name}'))
            elif key in ('items', 'additionalProperties') and isinstance(value, dict):
                found.extend(unsupported_keywords(value, f'{path}/{key}'))
            elif key in ('allOf', 'anyOf', 'oneOf'):
                for index, sub in enumerate(value):
                    found.extend(unsupported_keywords(sub, f'{path}/{key}/{index}'))
    return found


def validate(instance, schema, root=None, path='$') -> list:
    """Every violation as 'path: message'; an empty list means valid."""
    root = schema if root is None else root
    errors = []
    if '$ref' in schema:
        reference = schema['$ref']
        if not reference.startswith('#/'):
            return [f'{path}: only local $ref is supported ({reference})']
        target = root
        for part in reference[2:].split('/'):
            target = target[part]
        errors.extend(validate(instance, target, root, path))
    if 'type' in schema:
        wanted = schema['type'] if isinstance(schema['type'], list) else [schema['type']]
        if not any(TYPES[name](instance) for name in wanted):
            return errors + [f'{path}: {type(instance).__name__} is not of type {"/".join(wanted)}']
    if 'const' in schema and instance != schema['const']:
        errors.append(f'{path}: {instance!r} is not {schema["const"]!r}')
    if 'enum' in schema and instance not in schema['enum']:
        errors.append(f'{path}: {instance!r} is not one of {schema["enum"]}')
    if 'minimum' in schema and TYPES['number'](instance) and instance < schema['minimum']:
        errors.append(f'{path}: {instance} is less than {schema["minimum"]}')
    if 'pattern' in schema and isinstance(instance, str) and not re.search(schema['pattern'], instance):
        errors.append(f'{path}: {instance!r} does not match {schema["pattern"]}')
    if isinstance(instance, dict):
        for name in schema.get('required', []):
            if name not in instance:
                errors.append(f'{path}: missing required {name!r}')
        properties = schema.get('properties', {})
        for name, value in instance.items():
            if name in properties:
                errors.extend(validate(value, properties[name], root, f'{path}.{name}'))
            elif schema.get('additionalProperties') is False:
                errors.append(f'{path}: unexpected property {name!r}')
            elif isinstance(schema.get('additionalProperties'), dict):
                errors.extend(validate(value, schema['additionalProperties'], root, f'{path}.{name}'))
    if isinstance(instance, list) and isinstance(schema.get('items'), dict):
        for index, item in enumerate(instance):
            errors.extend(validate(item, schema['items'], root, f'{path}[{index}]'))
    for sub in schema.get('allOf', []):
        errors.extend(validate(instance, sub, root, path))
    if 'anyOf' in schema and not any(not validate(instance, sub, root, path) for sub in schema['anyOf']):
        errors.append(f'{path}: matches none of anyOf')
    if 'oneOf' in schema and sum(1 for sub in schema['oneOf'] if not validate(instance, sub, root, path)) != 1:
        errors.append(f'{path}: does not match exactly one of oneOf')
    return errors
