/**
 * The generated catalog (src/generated/catalog.ts, re-exported by frames.ts)
 * against the protos parsed by protobufjs, independently of the generator:
 * field names and order, JSON kinds, enum values, comments, and which event
 * type travels on which topic. A change to events.proto that the generated
 * file does not follow fails here (and `scripts/gen_protos.py --check`).
 */
import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import protobuf from 'protobufjs';
import { describe, expect, expectTypeOf, it } from 'vitest';
import {
  CATALOG,
  ENUMS,
  EVENT_TOPICS,
  EVENT_TYPES,
  PAYLOAD_SCHEMAS,
  TOPICS,
  TOPIC_DELIVERY,
  decodeMessage,
  type AgentActivity,
  type AnomalyDetected,
  type DashboardMetrics,
  type EventPayloads,
  type FieldKind,
  type MapUpdate,
  type Notification,
  type PackageUpdate,
  type PayloadFromSchema,
  type SystemHealth,
} from '../src/frames';
import { SAMPLE } from './fakes';

const PROTO_DIR = fileURLToPath(new URL('../../../protos/clearpath/realtime/v1/', import.meta.url));
const PACKAGE = 'clearpath.realtime.v1';
const source = readFileSync(`${PROTO_DIR}events.proto`, 'utf8');
// alternateCommentMode: `//` comments become the `comment` of what follows them.
const root = protobuf.parse(source, { keepCase: true, alternateCommentMode: true }).root;

// Internal to the backend, never sent to browsers: bridges publish a canary to
// themselves on TOPIC_CANARY to prove their own delivery path (/readyz), and drop
// it before any socket. The frame types leave it out on purpose.
const INTERNAL_PAYLOADS = new Set(['canary']);
const INTERNAL_TOPICS = new Set(['TOPIC_CANARY']);

const NUMBER_TYPES = new Set(['double', 'float', 'int32', 'int64', 'uint32', 'uint64', 'sint32', 'sint64', 'fixed32', 'fixed64', 'sfixed32', 'sfixed64']);

/** How the bridge renders a proto field in JSON. */
function jsonKind(field: protobuf.Field): FieldKind | string {
  if (field.type === 'string') return 'string';
  if (field.type === 'bool') return 'bool';
  if (NUMBER_TYPES.has(field.type)) return 'number';
  if (field.type === 'google.protobuf.Timestamp') return 'timestamp';
  const enumType = root.lookup(field.type);
  if (enumType instanceof protobuf.Enum) return { enum: enumType.name as keyof typeof ENUMS };
  return `unsupported:${field.type}`;
}

/** PACKAGE_STATUS_IN_TRANSIT -> in_transit (prefix from the enum name). */
function jsonEnumValues(e: protobuf.Enum): string[] {
  const prefix = `${e.name.replace(/([a-z0-9])([A-Z])/g, '$1_$2').toUpperCase()}_`;
  return Object.entries(e.values)
    .filter(([name]) => !INTERNAL_TOPICS.has(name))
    .sort((a, b) => a[1] - b[1])
    .map(([name]) => {
      expect(name.startsWith(prefix), `${name} has prefix ${prefix}`).toBe(true);
      return name.slice(prefix.length).toLowerCase();
    });
}

describe('frame types match events.proto', () => {
  it('has one payload schema per message of the Event payload oneof, named like its oneof field', () => {
    const eventMsg = root.lookupType(`${PACKAGE}.Event`);
    const oneof = eventMsg.oneofs['payload'];
    expect(oneof).toBeDefined();
    const fields = oneof!.fieldsArray.filter((f) => !INTERNAL_PAYLOADS.has(f.name));
    expect(fields.map((f) => f.name).sort()).toEqual([...EVENT_TYPES].sort());
    for (const f of fields) {
      expect(PAYLOAD_SCHEMAS[f.name as keyof typeof PAYLOAD_SCHEMAS].message).toBe(f.type);
    }
  });

  for (const type of EVENT_TYPES) {
    it(`${type}: same fields, in proto order, with matching JSON kinds`, () => {
      const schema = PAYLOAD_SCHEMAS[type];
      const message = root.lookupType(`${PACKAGE}.${schema.message}`);
      const protoFields = [...message.fieldsArray].sort((a, b) => a.id - b.id);
      expect(Object.keys(schema.fields)).toEqual(protoFields.map((f) => f.name));
      for (const field of protoFields) {
        expect(field.repeated, `${schema.message}.${field.name} is repeated`).toBe(false);
        expect(schema.fields[field.name as keyof typeof schema.fields], `${schema.message}.${field.name}`).toEqual(jsonKind(field));
      }
    });
  }

  for (const name of Object.keys(ENUMS) as (keyof typeof ENUMS)[]) {
    it(`enum ${name}: same values, in order`, () => {
      expect([...ENUMS[name]]).toEqual(jsonEnumValues(root.lookupEnum(`${PACKAGE}.${name}`)));
    });
  }

  it('sends each event type on the topic the proto names for it', () => {
    // In the oneof, each payload field carries a comment "On TOPIC_X."
    const pairs = [...source.matchAll(/\/\/ On (TOPIC_[A-Z_]+)\.\s*\n\s*\w+ (\w+) = \d+;/g)]
      .filter((m) => !INTERNAL_TOPICS.has(m[1]!))
      .map((m) => [m[2], m[1]!.replace(/^TOPIC_/, '').toLowerCase()]);
    expect(Object.fromEntries(pairs)).toEqual(EVENT_TOPICS);
    expect(new Set(Object.values(EVENT_TOPICS))).toEqual(new Set(TOPICS));
  });

  it('StreamPosition has offset and epoch', () => {
    const pos = root.lookupType(`${PACKAGE}.StreamPosition`);
    expect(pos.fieldsArray.map((f) => f.name)).toEqual(['offset', 'epoch']);
  });

  it('the protocol examples type-check and carry every field', () => {
    const samples: EventPayloads = SAMPLE;
    for (const type of EVENT_TYPES) {
      expect(Object.keys(samples[type]).sort()).toEqual(Object.keys(PAYLOAD_SCHEMAS[type].fields).sort());
    }
  });
});

/** A proto comment as the catalog carries it: on one line, runs of spaces made one. */
function oneLine(comment: string | null): string {
  return (comment ?? '').split(/\s+/).filter(Boolean).join(' ');
}

/** The JSON Schema type the codec writes for a scalar proto type. */
function jsonType(field: protobuf.Field): string {
  if (field.type === 'string') return 'string';
  if (field.type === 'bool') return 'boolean';
  if (field.type === 'double' || field.type === 'float') return 'number';
  if (NUMBER_TYPES.has(field.type)) return 'integer';
  return 'string'; // enums and Timestamps are strings
}

describe('CATALOG (the JSON of GET /ws/schema) matches events.proto', () => {
  it('lists the subscription types in enum order, each with its event type and delivery class', () => {
    const topic = root.lookupEnum(`${PACKAGE}.Topic`);
    expect(CATALOG.subscription_types.map((s) => s.proto_name)).toEqual(
      Object.keys(topic.values).filter((n) => n !== 'TOPIC_UNSPECIFIED' && !INTERNAL_TOPICS.has(n)),
    );
    for (const s of CATALOG.subscription_types) {
      expect(s.number).toBe(topic.values[s.proto_name]);
      expect(s.description).toBe(oneLine(topic.comments[s.proto_name] ?? null));
      expect(EVENT_TOPICS[s.event_type]).toBe(s.name);
      expect(TOPIC_DELIVERY[s.name]).toBe(s.delivery_class);
      // Never-drop classes are never conflated.
      if (s.delivery_class !== 'latest') expect(s.conflation_key).toBeNull();
    }
    expect(CATALOG.subscription_types.map((s) => s.name)).toEqual([...TOPICS]);
  });

  for (const event of CATALOG.event_types) {
    it(`${event.name}: every field with its number, JSON type, enum values and comment`, () => {
      const message = root.lookupType(`${PACKAGE}.${event.message}`);
      expect(event.description).toBe(oneLine(message.comment));
      const protoFields = [...message.fieldsArray].sort((a, b) => a.id - b.id);
      expect(event.fields.map((f) => [f.name, f.number])).toEqual(protoFields.map((f) => [f.name, f.id]));
      for (const [i, field] of protoFields.entries()) {
        const entry = event.fields[i]!;
        expect(entry.json_type, `${event.message}.${field.name}`).toBe(jsonType(field));
        expect(entry.description).toBe(oneLine(field.comment));
        expect(entry.required).toBe(true);
        const kind = jsonKind(field);
        expect(entry.nullable).toBe(kind === 'timestamp');
        expect(entry.format).toBe(kind === 'timestamp' ? 'date-time' : null);
        if (typeof kind === 'object') {
          expect(entry.proto_type).toBe(kind.enum);
          expect(entry.enum).toEqual(jsonEnumValues(root.lookupEnum(`${PACKAGE}.${kind.enum}`)));
        } else {
          expect(entry.enum).toBeNull();
          expect(entry.proto_type).toBe(field.type);
        }
      }
    });
  }

  it('has every enum of events.proto with its values, numbers and comments', () => {
    const enums = root.lookup(PACKAGE) as protobuf.Namespace;
    const names = enums.nestedArray.filter((n) => n instanceof protobuf.Enum).map((n) => n.name);
    expect(Object.keys(CATALOG.enums)).toEqual(names);
    expect(Object.keys(ENUMS)).toEqual(names);
    for (const name of names) {
      const e = root.lookupEnum(`${PACKAGE}.${name}`);
      const entry = CATALOG.enums[name as keyof typeof CATALOG.enums];
      expect(entry.description).toBe(oneLine(e.comment));
      expect(entry.values.map((v) => v.name)).toEqual(jsonEnumValues(e));
      for (const v of entry.values) {
        expect(v.number).toBe(e.values[v.proto_name]);
        expect(v.description).toBe(oneLine(e.comments[v.proto_name] ?? null));
      }
    }
  });

  it('describes the envelope with StreamPosition as the position', () => {
    const names = CATALOG.envelope.fields.map((f) => f.name);
    expect(names).toEqual(['type', 'subscription_type', 'id', 'position', 'data', 'timestamp', 'published_at', 'traceparent']);
    const position = CATALOG.envelope.fields.find((f) => f.name === 'position')!;
    const proto = root.lookupType(`${PACKAGE}.StreamPosition`);
    expect(position.fields?.map((f) => [f.name, f.json_type])).toEqual(proto.fieldsArray.map((f) => [f.name, jsonType(f)]));
    expect(CATALOG.envelope.fields[0]!.enum).toEqual(EVENT_TYPES);
  });

  it('the generated interfaces are exactly what the generated schemas describe', () => {
    // Checked by the compiler (tsc includes this file); vitest runs them as no-ops.
    expectTypeOf<PayloadFromSchema<'package_update'>>().toEqualTypeOf<PackageUpdate>();
    expectTypeOf<PayloadFromSchema<'anomaly_detected'>>().toEqualTypeOf<AnomalyDetected>();
    expectTypeOf<PayloadFromSchema<'dashboard_metrics'>>().toEqualTypeOf<DashboardMetrics>();
    expectTypeOf<PayloadFromSchema<'notification'>>().toEqualTypeOf<Notification>();
    expectTypeOf<PayloadFromSchema<'map_update'>>().toEqualTypeOf<MapUpdate>();
    expectTypeOf<PayloadFromSchema<'agent_activity'>>().toEqualTypeOf<AgentActivity>();
    expectTypeOf<PayloadFromSchema<'system_health'>>().toEqualTypeOf<SystemHealth>();
  });
});

describe('decodeMessage', () => {
  const frame = { type: 'pong', data: {}, timestamp: '2024-01-15T10:30:00Z' };

  it('reads one frame or a batched array of frames', () => {
    expect(decodeMessage(JSON.stringify(frame)).frames).toEqual([frame]);
    expect(decodeMessage(JSON.stringify([frame, frame])).frames).toHaveLength(2);
    expect(decodeMessage('[]').frames).toEqual([]);
  });

  it('turns what it cannot read into client error frames', () => {
    const bad = decodeMessage('nope');
    expect(bad.frames).toEqual([]);
    expect(bad.errors.map((e) => e.data.code)).toEqual(['client_invalid_json']);
    expect(bad.errors[0]?.timestamp).toMatch(/Z$/);
    const mixed = decodeMessage(JSON.stringify([frame, { type: 1 }, { type: 'pong' }, null, { type: 'new_thing', data: {} }]));
    expect(mixed.frames).toHaveLength(1);
    expect(mixed.errors).toHaveLength(3);
    expect(mixed.unknown).toBe(1);
  });

  it('fills envelope defaults of event frames', () => {
    const { frames } = decodeMessage(JSON.stringify({ type: 'map_update', data: SAMPLE.map_update, timestamp: 't' }));
    expect(frames[0]).toMatchObject({ subscription_type: 'map_updates', id: '', position: null });
  });
});
