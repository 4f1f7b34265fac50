#!/usr/bin/python3
"""Prints Debian's tempest volume response schemas as one JSON document.

Run by test/schemas/tempest-schemas.ts (once per process); tempest's schemas are
read from the installed python3-tempest, never copied into this repository.

Output:
  schemas   every response schema dict (a module-level dict with 'status_code')
            of tempest.lib.api_schema.response.volume and its v3_N packages,
            keyed '<module>.<attr>' ('volumes.show_volume',
            'v3_61.volumes.show_volume');
  clients   each v3 client's microversion table ('schema_versions_info'):
            {'<client module>.<class>': {'base': 'volumes', 'versions':
            [{'min': None, 'max': '3.60', 'module': 'volumes'}, ...]}};
            clients without a table name their one schema module as 'base';
  formats   the 'format' values tempest's validator really checks (its draft-4
            format checker plus tempest's own 'iso8601-date-time'); any other
            format tempest leaves unchecked.
"""
import importlib
import inspect
import json
import pkgutil
import sys

from tempest.lib.api_schema.response import volume as schema_pkg
from tempest.lib.common import jsonschema_validator
from tempest.lib.services.volume import v3 as clients_pkg

PREFIX = schema_pkg.__name__ + '.'


def module_key(module):
    return module.__name__[len(PREFIX):]


def schema_modules():
    for info in pkgutil.walk_packages(schema_pkg.__path__, PREFIX):
        if not info.ispkg:
            yield importlib.import_module(info.name)


def is_schema(value):
    return isinstance(value, dict) and 'status_code' in value


def main():
    schemas = {}
    for module in schema_modules():
        for name, value in vars(module).items():
            if is_schema(value):
                schemas['%s.%s' % (module_key(module), name)] = value

    clients = {}
    for info in pkgutil.iter_modules(clients_pkg.__path__):
        module = importlib.import_module('%s.%s' % (clients_pkg.__name__, info.name))
        imported = [v for v in vars(module).values()
                    if inspect.ismodule(v) and v.__name__.startswith(PREFIX)]
        for cls_name, cls in vars(module).items():
            if not inspect.isclass(cls) or cls.__module__ != module.__name__:
                continue
            table = getattr(cls, 'schema_versions_info', None)
            entry = {}
            if table:
                versions = [{'min': row['min'], 'max': row['max'],
                             'module': module_key(row['schema'])}
                            for row in table]
                entry['base'] = next(v['module'] for v in versions
                                     if '.' not in v['module'])
                entry['versions'] = versions
            elif len(imported) == 1:
                entry['base'] = module_key(imported[0])
            else:
                continue
            clients['%s.%s' % (info.name, cls_name)] = entry

    formats = sorted(jsonschema_validator.FORMAT_CHECKER.checkers)
    json.dump({'schemas': schemas, 'clients': clients, 'formats': formats},
              sys.stdout, sort_keys=True)


if __name__ == '__main__':
    main()
