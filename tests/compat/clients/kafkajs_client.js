#!/usr/bin/env node
// kafkajs (2.x) compatibility client (consumer-group scenario only; see group_check.py).
//
// usage: node kafkajs_client.js <bootstrap host:port> <topic> groups-produce|groups-consume|groups-resume
//        (kafkajs is found through NODE_PATH=<repo>/.cache/compat/node_modules, set by run.sh)
//
// groups-produce: create <topic> (3 partitions) with the admin client, idempotent produce
//                 (idempotent: true, acks -1, default partitioner) of keys k-0..k-999, check the offsets.
// groups-consume: 3 consumers (one process) join group <topic>-g one by one, each processing records
//                 in eachBatch with autoCommit off and committing (commitOffsets) after each batch;
//                 events go to $COMPAT_EVENTS. kafkajs has no revocation callback: the REBALANCING
//                 instrumentation event (emitted before it rejoins) counts as revoking everything.
// groups-resume:  produce k-1000..k-1099, then ONE new consumer in the group must read exactly those.
'use strict'

const fs = require('fs')
const { Kafka, logLevel, Partitioners } = require('kafkajs')

const CLIENT = 'kafkajs'
const PARTITIONS = 3
const N_FIRST = 1000
const N_MORE = 100
const STEP_TIMEOUT_MS = 60000
const STAGE_TIMEOUT_MS = 20000
const CONSUME_TIMEOUT_MS = 30000
const MAX_BATCH = 10
const PROCESS_DELAY_MS = 10
const MODES = ['groups-produce', 'groups-consume', 'groups-resume']

const sleep = ms => new Promise(resolve => setTimeout(resolve, ms))
const keyOf = i => Buffer.from(`k-${i}`)
const valueOf = i => Buffer.from(`g-${i}`)
const indexOfKey = key => {
  const k = key ? key.toString() : ''
  return k.startsWith('k-') ? parseInt(k.slice(2), 10) : -1
}
const err = e => `${e && e.name}: ${e && e.message}${e && e.type ? ` (${e.type})` : ''}`
const fmtParts = ps => (ps.length ? [...ps].sort((a, b) => a - b).join(',') : '-')

function withTimeout(promise, ms, what) {
  let timer
  return Promise.race([
    promise,
    new Promise((_, reject) => {
      timer = setTimeout(() => reject(new Error(`${what}: timed out after ${ms / 1000}s`)), ms)
    }),
  ]).finally(() => clearTimeout(timer))
}

function makeKafka(bootstrap, clientId) {
  return new Kafka({
    clientId,
    brokers: [bootstrap],
    connectionTimeout: 10000,
    requestTimeout: 30000,
    retry: { initialRetryTime: 200, maxRetryTime: 2000, retries: 10 },
    logLevel: logLevel.WARN,
  })
}

// ------------------------------------------------------------------ event log + state
class Events {
  constructor(path) {
    this.fd = fs.openSync(path, 'a')
    this.owned = new Map()
    this.seen = new Set()
    this.committed = new Map()
    this.write('strict 1')
  }
  write(line) {
    fs.writeSync(this.fd, line + '\n')
  }
  assign(m, ps) {
    this.owned.set(m, new Set(ps))
    this.write(`assign ${m} - ${fmtParts(ps)}`)
  }
  revoke(m) {
    this.owned.set(m, new Set())
    this.write(`revoke ${m} *`)
  }
  rec(m, p, o, i) {
    this.seen.add(i)
    this.write(`rec ${m} ${p} ${o} ${i}`)
  }
  commit(m, p, next, ok, e) {
    if (ok) this.committed.set(p, Math.max(this.committed.get(p) || 0, next))
    this.write(`commit ${m} ${p} ${next} ${ok ? 'ok' : 'fail ' + String(e).replace(/\s+/g, ' ')}`)
  }
  error(text) {
    this.write('error ' + String(text).replace(/\s+/g, ' '))
  }
  stageReached(k) {
    let owners = 0
    let total = 0
    const union = new Set()
    for (const s of this.owned.values()) {
      if (!s.size) continue
      owners++
      total += s.size
      s.forEach(p => union.add(p))
    }
    return owners === k && total === union.size && union.size === PARTITIONS
  }
  done(keys, ends) {
    for (const i of keys) if (!this.seen.has(i)) return false
    for (const [p, e] of ends) if ((this.committed.get(p) || 0) < e) return false
    return true
  }
  ownership() {
    return JSON.stringify(Object.fromEntries([...this.owned].map(([m, s]) => [m, [...s].sort()])))
  }
}

// ------------------------------------------------------------------ admin helpers
async function withAdmin(bootstrap, fn) {
  const admin = makeKafka(bootstrap, 'compat-kafkajs-admin').admin()
  await withTimeout(admin.connect(), STEP_TIMEOUT_MS, 'admin connect')
  try {
    return await fn(admin)
  } finally {
    await admin.disconnect()
  }
}

async function endOffsets(bootstrap, topic) {
  return withAdmin(bootstrap, async admin => {
    const res = await withTimeout(admin.fetchTopicOffsets(topic), STEP_TIMEOUT_MS, 'fetchTopicOffsets')
    const out = new Map()
    for (const r of res) out.set(r.partition, parseInt(r.high, 10))
    return new Map([...out].sort((a, b) => a[0] - b[0]))
  })
}

async function committedOffsets(bootstrap, topic, groupId) {
  return withAdmin(bootstrap, async admin => {
    const res = await withTimeout(admin.fetchOffsets({ groupId, topics: [topic] }), STEP_TIMEOUT_MS, 'fetchOffsets')
    const out = new Map()
    for (const t of res) for (const p of t.partitions) out.set(p.partition, parseInt(p.offset, 10))
    return new Map([...out].sort((a, b) => a[0] - b[0]))
  })
}

async function createTopic(bootstrap, topic) {
  return withAdmin(bootstrap, async admin => {
    const created = await withTimeout(
      admin.createTopics({
        topics: [{ topic, numPartitions: PARTITIONS, replicationFactor: 1 }],
        waitForLeaders: true,
        timeout: 30000,
      }),
      STEP_TIMEOUT_MS,
      'createTopics'
    )
    if (!created) throw new Error(`createTopics: topic ${topic} already exists`)
  })
}

// ------------------------------------------------------------------ produce
async function produce(bootstrap, topic, first, count) {
  const before = await endOffsets(bootstrap, topic)
  const producer = makeKafka(bootstrap, 'compat-kafkajs-gproducer').producer({
    idempotent: true,
    maxInFlightRequests: 1,
    createPartitioner: Partitioners.DefaultPartitioner,
  })
  await withTimeout(producer.connect(), STEP_TIMEOUT_MS, 'producer connect')
  try {
    const messages = []
    for (let i = first; i < first + count; i++) messages.push({ key: keyOf(i), value: valueOf(i) })
    const res = await withTimeout(producer.send({ topic, acks: -1, messages }), STEP_TIMEOUT_MS, 'send')
    for (const r of res) {
      if (r.errorCode !== 0) throw new Error(`produce partition ${r.partition}: error code ${r.errorCode}`)
      const b = parseInt(r.baseOffset, 10)
      if (b !== (before.get(r.partition) || 0)) {
        throw new Error(`partition ${r.partition}: base offset ${b}, expected ${before.get(r.partition)}`)
      }
    }
  } finally {
    await producer.disconnect()
  }
  const after = await endOffsets(bootstrap, topic)
  const perP = {}
  let total = 0
  for (const [p, o] of after) {
    perP[p] = o - (before.get(p) || 0)
    total += perP[p]
  }
  if (total !== count) throw new Error(`end offsets grew by ${total} (${JSON.stringify(perP)}), produced ${count}`)
  return perP
}

// ------------------------------------------------------------------ consume
async function startMember(bootstrap, topic, groupId, m, ev) {
  const consumer = makeKafka(bootstrap, `compat-kafkajs-${m}`).consumer({
    groupId,
    sessionTimeout: 10000,
    heartbeatInterval: 500,
    rebalanceTimeout: 30000,
    maxWaitTimeInMs: 200,
    retry: { initialRetryTime: 200, maxRetryTime: 2000, retries: 10 },
  })
  const { GROUP_JOIN, REBALANCING, CRASH } = consumer.events
  consumer.on(GROUP_JOIN, e => ev.assign(m, (e.payload.memberAssignment[topic] || []).map(Number)))
  consumer.on(REBALANCING, () => ev.revoke(m))
  consumer.on(CRASH, e => ev.error(`${m}: consumer crashed: ${err(e.payload.error)}`))
  await withTimeout(consumer.connect(), STEP_TIMEOUT_MS, `${m} connect`)
  await consumer.subscribe({ topics: [topic], fromBeginning: true })
  await consumer.run({
    autoCommit: false,
    eachBatchAutoResolve: false,
    eachBatch: async ({ batch, resolveOffset, heartbeat, isRunning, isStale }) => {
      const p = batch.partition
      let next = null
      for (const msg of batch.messages.slice(0, MAX_BATCH)) {
        if (!isRunning() || isStale()) break
        ev.rec(m, p, parseInt(msg.offset, 10), indexOfKey(msg.key))
        await sleep(PROCESS_DELAY_MS)
        resolveOffset(msg.offset)
        next = parseInt(msg.offset, 10) + 1
      }
      if (next !== null) {
        try {
          await consumer.commitOffsets([{ topic, partition: p, offset: String(next) }])
          ev.commit(m, p, next, true)
        } catch (e) {
          ev.commit(m, p, next, false, err(e))
          throw e // let kafkajs rejoin / refetch from the committed offset
        }
      }
      // messages of this batch beyond MAX_BATCH are not resolved: kafkajs fetches them again
      await heartbeat()
    },
  })
  return consumer
}

async function consume(bootstrap, topic, members, keys) {
  const ev = new Events(process.env.COMPAT_EVENTS)
  const groupId = `${topic}-g`
  const ends = await endOffsets(bootstrap, topic)
  for (const [p, o] of ends) ev.write(`end ${p} ${o}`)
  const started = []
  try {
    let ok = true
    for (let k = 1; k <= members.length; k++) {
      const m = members[k - 1]
      const t0 = Date.now()
      started.push([m, await startMember(bootstrap, topic, groupId, m, ev)])
      while (!ev.stageReached(k) && Date.now() - t0 < STAGE_TIMEOUT_MS) await sleep(50)
      if (!ev.stageReached(k)) {
        ev.error(`stage ${k} (${k} members owning disjoint partitions covering all ${PARTITIONS}) not reached ` +
          `within ${STAGE_TIMEOUT_MS / 1000}s; ownership ${ev.ownership()}`)
        ok = false
        break
      }
      ev.write(`stage ${k}`)
      process.stderr.write(`${CLIENT}: stage ${k} reached ${(Date.now() - t0) / 1000}s after starting ${m}\n`)
    }
    if (ok) {
      const deadline = Date.now() + CONSUME_TIMEOUT_MS
      while (!ev.done(keys, ends)) {
        if (Date.now() > deadline) {
          const missing = [...keys].filter(i => !ev.seen.has(i)).length
          ev.error(`not everything consumed and committed within ${CONSUME_TIMEOUT_MS / 1000}s of the last ` +
            `rebalance: ${missing} of ${keys.size} records missing, committed ` +
            `${JSON.stringify([...ev.committed])}, end offsets ${JSON.stringify([...ends])}`)
          break
        }
        await sleep(50)
      }
    }
  } finally {
    for (const [m, c] of started.reverse()) {
      ev.revoke(m) // processes nothing from here on
      try {
        await withTimeout(c.disconnect(), 20000, `${m} disconnect`) // LeaveGroup
      } catch (e) {
        ev.error(`${m}: ${err(e)}`)
      }
    }
  }
  for (const [p, o] of await committedOffsets(bootstrap, topic, groupId)) ev.write(`final ${p} ${o}`)
}

const range = (from, count) => new Set(Array.from({ length: count }, (_, j) => from + j))

async function main() {
  const [bootstrap, topic, mode] = process.argv.slice(2)
  if (process.argv.length !== 5 || !MODES.includes(mode)) {
    process.stderr.write(`usage: kafkajs_client.js <bootstrap host:port> <topic> ${MODES.join('|')}\n`)
    process.exit(2)
  }
  try {
    if (mode === 'groups-produce') {
      await createTopic(bootstrap, topic)
      const perP = await produce(bootstrap, topic, 0, N_FIRST)
      if (Object.keys(perP).length !== PARTITIONS || Object.values(perP).some(n => n === 0)) {
        throw new Error(`records landed in partitions ${JSON.stringify(perP)} only`)
      }
      console.log(`${CLIENT} ${mode} OK ${N_FIRST} records, per partition ${JSON.stringify(perP)}`)
    } else if (mode === 'groups-consume') {
      await consume(bootstrap, topic, ['c1', 'c2', 'c3'], range(0, N_FIRST))
    } else {
      await produce(bootstrap, topic, N_FIRST, N_MORE)
      await consume(bootstrap, topic, ['r1'], range(N_FIRST, N_MORE))
    }
    process.exit(0)
  } catch (e) {
    console.log(`${CLIENT} ${mode} FAIL ${err(e).replace(/\s+/g, ' ')}`)
    process.exit(1)
  }
}

main()
