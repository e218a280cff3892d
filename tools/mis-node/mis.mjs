#!/usr/bin/env node
// A МИС in JavaScript: publishes one СЭМД to emd-pipeline and waits for its outcome, as docs/integration.md says.
//
// Everything it knows of the contract it reads from docs/asyncapi.yaml: the topic it writes and the one it reads
// (the МИС's send and receive operations), the consumer group it may use, the headers the created message
// requires and their values, the key (x-emd-key), and where each field is read from the CDA (x-emd-cda-xpaths).
// What the XPaths cannot say (times as ISO 8601, a department only of the form <organisation>.0.<n>) is the
// guide's, section "Reading the fields".
//
//   node mis.mjs --bootstrap 127.0.0.1:9092 --mis-id local-mis --system-id local-mis document.xml
//
// Exit 0 when the status topic says `registered`, 1 on `rejected` or `failed`, 2 on a bad argument or when no
// outcome came within --timeout seconds. Output: one JSON line per status event of the document.

import { createHash, randomBytes, randomUUID } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';

import { DOMParser } from '@xmldom/xmldom';
import kafkajs from 'kafkajs';
import xpath from 'xpath';
import YAML from 'yaml';

const { Kafka, logLevel } = kafkajs;
const HERE = dirname(fileURLToPath(import.meta.url));
const USAGE = `usage: node mis.mjs --bootstrap HOST:PORT --mis-id ID --system-id ID [--kind CODE]
                   [--contract asyncapi.yaml] [--timeout SECONDS] [--dry-run] DOCUMENT.xml

Publishes DOCUMENT.xml (a СЭМД) as МИС ID to emd.document.created.<ID> and prints its status events from
emd.document.status.<ID> until one is final. --kind: the НСИ 1520 kind of the template the document implements,
when its ClinicalDocument/code is not a 1520 code. --dry-run prints the record it would send and exits.`;

function fail(message) {
  console.error(`mis-node: ${message}\n\n${USAGE}`);
  process.exit(2);
}

// --- the contract, from docs/asyncapi.yaml ----------------------------------------------------------------------
function resolve(doc, ref) {
  return ref.replace(/^#\//, '').split('/').reduce((node, part) => node?.[part], doc);
}

export function readContract(path) {
  const doc = YAML.parse(readFileSync(path, 'utf8'));
  const misOperations = Object.values(doc.operations).filter((op) => op.tags?.some((t) => t.name === 'mis'));
  const send = misOperations.find((op) => op.action === 'send');
  const receive = misOperations.find((op) => op.action === 'receive');
  if (!send || !receive) throw new Error(`${path}: no МИС send and receive operations`);
  const created = resolve(doc, resolve(doc, send.messages[0].$ref).$ref);
  const headers = Object.fromEntries(
    created.headers.required.map((name) => [name, created.headers.properties[name]]),
  );
  return {
    createdAddress: resolve(doc, send.channel.$ref).address,
    statusAddress: resolve(doc, receive.channel.$ref).address,
    groupId: receive.bindings.kafka.groupId.enum[0],
    headers,
    keyLocation: created['x-emd-key'].location,
    xpaths: created['x-emd-cda-xpaths'],
  };
}

// --- the CDA ---------------------------------------------------------------------------------------------------
function isoTime(hl7) {
  // HL7 TS: YYYYMMDD[HH[MM[SS]]][+ZZZZ] → ISO 8601 (the guide: a time with its zone; a date alone for a date)
  const m = /^(\d{4})(\d{2})(\d{2})(\d{2})?(\d{2})?(\d{2})?(?:\.\d+)?([+-]\d{2})?(\d{2})?$/.exec(hl7 ?? '');
  if (!m) return null;
  const [, y, mo, d, h = '00', mi = '00', s = '00', zh, zm] = m;
  return `${y}-${mo}-${d}T${h}:${mi}:${s}${zh ? `${zh}:${zm}` : ''}`;
}

function snils(raw) {
  // СНИЛС: 11 digits, the separators a document may carry (spaces, dashes) removed; else none
  const digits = (raw ?? '').replace(/[\s-]/g, '');
  return /^\d{11}$/.test(digits) ? digits : null;
}

function isoDate(hl7) {
  const m = /^(\d{4})(\d{2})(\d{2})/.exec(hl7 ?? '');
  return m ? `${m[1]}-${m[2]}-${m[3]}` : null;
}

export function readDocument(bytes, xpaths) {
  const dom = new DOMParser().parseFromString(bytes.toString('utf8'), 'text/xml');
  const select = xpath.useNamespaces(xpaths.namespaces);
  const text = (expr, node = dom) => {
    const found = select(expr, node, true);
    if (found == null) return null;
    return (found.nodeValue ?? found.textContent ?? '').trim() || null;
  };
  const f = (name) => text(xpaths.fields[name]);
  const organizationOid = f('organizationOid');
  const department = (oid) => (oid && oid.startsWith(`${organizationOid}.0.`) ? oid : null);
  const departmentOid = department(f('departmentOid'));
  const signers = [];
  for (const [role, entityPath] of Object.entries(xpaths.signers.entities)) {
    for (const entity of select(entityPath, dom)) {
      const s = (name) => text(xpaths.signers.fields[name], entity);
      signers.push({
        role,
        snils: snils(s('snils')),
        family: s('family'),
        given: s('given'),
        patronymic: s('patronymic'),
        localId: s('localId'),
        positionCode: s('positionCode'),
        positionCodeSystemVersion: s('positionCodeSystemVersion'),
        specialityCode: s('specialityCode'),
        specialityCodeSystemVersion: s('specialityCodeSystemVersion'),
        departmentOid: department(s('departmentOid')) ?? departmentOid,
      });
    }
  }
  return {
    localUid: f('localUid'),
    kind: f('kind'),
    organizationOid,
    departmentOid,
    creationTime: isoTime(f('creationTime')),
    documentNumber: f('documentNumber'),
    patient: {
      snils: snils(f('patient.snils')),
      localId: f('patient.localId'),
      family: f('patient.family'),
      given: f('patient.given'),
      patronymic: f('patient.patronymic'),
      gender: f('patient.gender'),
      birthDate: isoDate(f('patient.birthDate')),
    },
    signers,
  };
}

// --- the record --------------------------------------------------------------------------------------------------
function pointer(object, location) {
  // a runtime expression of the form $message.payload#/a/b
  const [, path] = location.split('#');
  return path.split('/').slice(1).reduce((node, part) => node?.[part], object);
}

export function buildRecord(contract, bytes, systemId, kind) {
  const read = readDocument(bytes, contract.xpaths);
  // a document that names its kind by templateId only: the kind of the template this МИС implements (the guide)
  read.kind = read.kind ?? kind ?? null;
  if (!read.kind) throw new Error('the document has no НСИ 1520 code: give --kind, the kind of its template');
  if (kind && read.kind !== kind) throw new Error(`--kind ${kind}, but the document says ${read.kind}`);
  const data = {
    ...read,
    systemId,
    document: {
      sha256: createHash('sha256').update(bytes).digest('hex'),
      size: bytes.length,
      mediaType: 'text/xml',
      inline: bytes.toString('base64'),
    },
    recipient: null,
    associations: [],
  };
  // each required header repeats a field of the envelope (x-emd-value-of); the constant ones give that field
  const fieldOf = (name) => contract.headers[name]['x-emd-value-of'].split('#/')[1];
  const constant = (field) => Object.entries(contract.headers).find(([n]) => fieldOf(n) === field)?.[1].const;
  const event = {
    eventId: randomUUID(),
    type: constant('type'),
    schemaVersion: Number(constant('schemaVersion')),
    time: new Date().toISOString(),
    traceId: randomBytes(16).toString('hex'),
    source: systemId,
    data,
  };
  const headers = {};
  for (const name of Object.keys(contract.headers)) {
    const value = pointer(event, contract.headers[name]['x-emd-value-of']);
    if (value === undefined || value === null) throw new Error(`header ${name}: no value in the event`);
    headers[name] = String(value);
  }
  const key = pointer(event, contract.keyLocation);
  return { key, value: JSON.stringify(event), headers };
}

// --- main --------------------------------------------------------------------------------------------------------
async function main() {
  let args;
  try {
    args = parseArgs({
      allowPositionals: true,
      options: {
        bootstrap: { type: 'string' },
        'mis-id': { type: 'string' },
        'system-id': { type: 'string' },
        contract: { type: 'string', default: join(HERE, '..', '..', 'docs', 'asyncapi.yaml') },
        kind: { type: 'string' },
        timeout: { type: 'string', default: '120' },
        'dry-run': { type: 'boolean', default: false },
        help: { type: 'boolean', short: 'h', default: false },
      },
    });
  } catch (err) {
    fail(err.message);
  }
  const { values, positionals } = args;
  if (values.help) {
    console.log(USAGE);
    return 0;
  }
  if (positionals.length !== 1) fail('give one document');
  for (const name of ['mis-id', 'system-id']) if (!values[name]) fail(`--${name} is required`);
  if (!values.bootstrap && !values['dry-run']) fail('--bootstrap is required');
  const contract = readContract(values.contract);
  let bytes;
  try {
    bytes = readFileSync(positionals[0]);
  } catch (err) {
    fail(`cannot read ${positionals[0]}: ${err.message}`);
  }
  const misId = values['mis-id'];
  const topic = contract.createdAddress.replace('{misId}', misId);
  const statusTopic = contract.statusAddress.replace('{misId}', misId);
  const record = buildRecord(contract, bytes, values['system-id'], values.kind);
  if (values['dry-run']) {
    console.log(JSON.stringify({ topic, statusTopic, groupId: contract.groupId.replace('{misId}', misId), ...record }));
    return 0;
  }

  const kafka = new Kafka({ clientId: `mis-node-${misId}`, brokers: values.bootstrap.split(','), logLevel: logLevel.WARN });
  // not idempotent: kafkajs's InitProducerId v1 is refused by the development broker (docs/integration.md)
  const producer = kafka.producer({ allowAutoTopicCreation: false });
  await producer.connect();
  await producer.send({ topic, acks: -1, messages: [record] });
  await producer.disconnect();
  console.log(JSON.stringify({ published: record.key, topic }));

  const consumer = kafka.consumer({ groupId: contract.groupId.replace('{misId}', misId), sessionTimeout: 10000 });
  await consumer.connect();
  await consumer.subscribe({ topics: [statusTopic], fromBeginning: true });
  const outcome = await new Promise((done) => {
    const timer = setTimeout(() => done('timeout'), Number(values.timeout) * 1000);
    consumer.run({
      eachMessage: async ({ message }) => {
        if (message.key?.toString() !== record.key) return;
        const { data } = JSON.parse(message.value.toString());
        console.log(JSON.stringify({ localUid: data.localUid, status: data.status, ...(data.emdrId ? { emdrId: data.emdrId } : {}) }));
        if (['registered', 'rejected', 'failed'].includes(data.status)) {
          clearTimeout(timer);
          done(data.status);
        }
      },
    });
  });
  await consumer.disconnect();
  if (outcome === 'timeout') {
    console.error(`mis-node: no outcome for ${record.key} within ${values.timeout} s`);
    return 2;
  }
  return outcome === 'registered' ? 0 : 1;
}

if (process.argv[1] && fileURLToPath(import.meta.url) === process.argv[1]) {
  process.env.KAFKAJS_NO_PARTITIONER_WARNING = '1';
  main().then(
    (code) => process.stdout.write('', () => process.exit(code)), // exit once a piped stdout is written out
    (err) => {
      console.error(`mis-node: ${err.message ?? err}`);
      process.exit(2);
    },
  );
}
