// Java kafka-clients (3.9.1): consumer-group scenario (see group_check.py for the event log format).
//
// usage: java -cp 'java-classes:java-lib/*' JavaClient <bootstrap> <topic> groups-produce|groups-consume|groups-resume
//
// groups-produce: create <topic> (3 partitions) with Admin, idempotent produce (enable.idempotence=true,
//                 acks=all, default partitioner) of keys k-0..k-999, check the acks.
// groups-consume: 3 KafkaConsumer threads join group <topic>-g one by one, each processing records and
//                 committing synchronously (commitSync) after each batch; events go to $COMPAT_EVENTS.
// groups-resume:  produce k-1000..k-1099, then ONE new consumer in the group must read exactly those.

import java.io.FileWriter;
import java.io.IOException;
import java.io.Writer;
import java.nio.charset.StandardCharsets;
import java.time.Duration;
import java.util.ArrayList;
import java.util.Collection;
import java.util.HashMap;
import java.util.HashSet;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.Properties;
import java.util.Set;
import java.util.TreeMap;
import java.util.TreeSet;
import java.util.concurrent.ConcurrentLinkedQueue;
import java.util.concurrent.TimeUnit;

import org.apache.kafka.clients.consumer.ConsumerConfig;
import org.apache.kafka.clients.consumer.ConsumerRebalanceListener;
import org.apache.kafka.clients.consumer.ConsumerRecord;
import org.apache.kafka.clients.consumer.ConsumerRecords;
import org.apache.kafka.clients.consumer.KafkaConsumer;
import org.apache.kafka.clients.consumer.OffsetAndMetadata;
import org.apache.kafka.clients.producer.KafkaProducer;
import org.apache.kafka.clients.producer.ProducerConfig;
import org.apache.kafka.clients.producer.ProducerRecord;
import org.apache.kafka.common.KafkaException;
import org.apache.kafka.common.TopicPartition;
import org.apache.kafka.common.serialization.ByteArrayDeserializer;
import org.apache.kafka.common.serialization.ByteArraySerializer;

public class JavaGroups {
    static final String CLIENT = "java";
    static final int PARTITIONS = 3;
    static final int N_FIRST = 1000, N_MORE = 100;
    static final long STAGE_TIMEOUT_MS = 20_000, CONSUME_TIMEOUT_MS = 30_000;
    static final int MAX_BATCH = 10;
    static final long PROCESS_DELAY_MS = 10;

    static byte[] keyOf(int i) {
        return ("k-" + i).getBytes(StandardCharsets.UTF_8);
    }

    static byte[] valueOf(int i) {
        return ("g-" + i).getBytes(StandardCharsets.UTF_8);
    }

    static int indexOfKey(byte[] key) {
        try {
            String k = new String(key, StandardCharsets.UTF_8);
            return k.startsWith("k-") ? Integer.parseInt(k.substring(2)) : -1;
        } catch (Exception e) {
            return -1;
        }
    }

    static String parts(Collection<Integer> ps) {
        if (ps.isEmpty()) return "-";
        StringBuilder sb = new StringBuilder();
        for (int p : new TreeSet<>(ps)) {
            if (sb.length() > 0) sb.append(',');
            sb.append(p);
        }
        return sb.toString();
    }

    static List<Integer> partsOf(Collection<TopicPartition> tps) {
        List<Integer> out = new ArrayList<>();
        for (TopicPartition tp : tps) out.add(tp.partition());
        return out;
    }

    // ------------------------------------------------------------------ event log + state
    static class Events {
        final Writer w;
        final Map<String, Set<Integer>> owned = new HashMap<>();
        final Set<Integer> seen = new HashSet<>();
        final Map<Integer, Long> committed = new HashMap<>();

        Events(String path) throws IOException {
            w = new FileWriter(path, StandardCharsets.UTF_8, true);
            write("strict 1");
        }

        synchronized void write(String line) {
            try {
                w.write(line + "\n");
                w.flush();
            } catch (IOException e) {
                throw new RuntimeException(e);
            }
        }

        synchronized void assign(String m, Collection<Integer> ps, int gen) {
            owned.put(m, new HashSet<>(ps));
            write("assign " + m + " " + gen + " " + parts(ps));
        }

        synchronized void revoke(String m, Collection<Integer> ps) {
            Set<Integer> s = owned.computeIfAbsent(m, k -> new HashSet<>());
            if (ps == null) s.clear(); else s.removeAll(ps);
            write("revoke " + m + " " + (ps == null ? "*" : parts(ps)));
        }

        synchronized void rec(String m, int p, long o, int i) {
            seen.add(i);
            write("rec " + m + " " + p + " " + o + " " + i);
        }

        synchronized void commit(String m, int p, long next, boolean ok, String err) {
            if (ok) committed.merge(p, next, Math::max);
            write("commit " + m + " " + p + " " + next + (ok ? " ok" : " fail " + err.replaceAll("\\s+", " ")));
        }

        synchronized void error(String text) {
            write("error " + text.replaceAll("\\s+", " "));
        }

        synchronized boolean stageReached(int k) {
            int owners = 0, total = 0;
            Set<Integer> union = new HashSet<>();
            for (Set<Integer> s : owned.values()) {
                if (s.isEmpty()) continue;
                owners++;
                total += s.size();
                union.addAll(s);
            }
            return owners == k && total == union.size() && union.size() == PARTITIONS;
        }

        synchronized boolean done(Set<Integer> keys, Map<Integer, Long> ends) {
            if (!seen.containsAll(keys)) return false;
            for (Map.Entry<Integer, Long> e : ends.entrySet()) {
                if (committed.getOrDefault(e.getKey(), 0L) < e.getValue()) return false;
            }
            return true;
        }

        synchronized String ownership() {
            return new TreeMap<>(owned).toString();
        }
    }

    // ------------------------------------------------------------------ produce
    static Map<Integer, Integer> produce(String bootstrap, String topic, int first, int count,
                                         Map<Integer, Long> before) throws Exception {
        Properties p = JavaClient.common(bootstrap, "compat-java-gproducer");
        p.remove("default.api.timeout.ms");
        p.put(ProducerConfig.ACKS_CONFIG, "all");
        p.put(ProducerConfig.ENABLE_IDEMPOTENCE_CONFIG, "true");
        p.put(ProducerConfig.LINGER_MS_CONFIG, "5");
        p.put(ProducerConfig.MAX_BLOCK_MS_CONFIG, String.valueOf(JavaClient.STEP_TIMEOUT_MS));
        p.put(ProducerConfig.DELIVERY_TIMEOUT_MS_CONFIG, String.valueOf(JavaClient.STEP_TIMEOUT_MS));
        p.put(ProducerConfig.KEY_SERIALIZER_CLASS_CONFIG, ByteArraySerializer.class.getName());
        p.put(ProducerConfig.VALUE_SERIALIZER_CLASS_CONFIG, ByteArraySerializer.class.getName());
        ConcurrentLinkedQueue<String> failures = new ConcurrentLinkedQueue<>();
        Map<Integer, List<Long>> byP = new TreeMap<>();
        try (KafkaProducer<byte[], byte[]> producer = new KafkaProducer<>(p)) {
            for (int i = first; i < first + count; i++) {
                final int idx = i;
                producer.send(new ProducerRecord<>(topic, keyOf(i), valueOf(i)), (md, e) -> {
                    if (e != null) {
                        failures.add("record k-" + idx + ": " + JavaClient.err(e));
                    } else {
                        synchronized (byP) {
                            byP.computeIfAbsent(md.partition(), k -> new ArrayList<>()).add(md.offset());
                        }
                    }
                });
            }
            producer.flush();
        }
        if (!failures.isEmpty()) {
            throw new RuntimeException(failures.size() + " delivery failures, first: " + failures.peek());
        }
        Map<Integer, Integer> perP = new TreeMap<>();
        int acked = 0;
        synchronized (byP) {
            for (Map.Entry<Integer, List<Long>> e : byP.entrySet()) {
                List<Long> offs = e.getValue();
                offs.sort(null);
                long start = before.getOrDefault(e.getKey(), 0L);
                for (int j = 0; j < offs.size(); j++) {
                    if (offs.get(j) != start + j) {
                        throw new RuntimeException("partition " + e.getKey() + ": acked offsets not contiguous from "
                                + start + ": " + offs.subList(0, Math.min(5, offs.size())) + "...");
                    }
                }
                perP.put(e.getKey(), offs.size());
                acked += offs.size();
            }
        }
        if (acked != count) throw new RuntimeException((count - acked) + " of " + count + " records not acknowledged");
        return perP;
    }

    // ------------------------------------------------------------------ consume
    static Properties consumerProps(String bootstrap, String clientId, String group) {
        Properties p = JavaClient.common(bootstrap, clientId);
        if (group != null) p.put(ConsumerConfig.GROUP_ID_CONFIG, group);
        p.put(ConsumerConfig.ENABLE_AUTO_COMMIT_CONFIG, "false");
        p.put(ConsumerConfig.AUTO_OFFSET_RESET_CONFIG, "earliest");
        p.put(ConsumerConfig.HEARTBEAT_INTERVAL_MS_CONFIG, "500");
        p.put(ConsumerConfig.SESSION_TIMEOUT_MS_CONFIG, "10000");
        p.put(ConsumerConfig.MAX_POLL_RECORDS_CONFIG, String.valueOf(MAX_BATCH));
        p.put(ConsumerConfig.KEY_DESERIALIZER_CLASS_CONFIG, ByteArrayDeserializer.class.getName());
        p.put(ConsumerConfig.VALUE_DESERIALIZER_CLASS_CONFIG, ByteArrayDeserializer.class.getName());
        return p;
    }

    static List<TopicPartition> tps(String topic) {
        List<TopicPartition> out = new ArrayList<>();
        for (int p = 0; p < PARTITIONS; p++) out.add(new TopicPartition(topic, p));
        return out;
    }

    static Map<Integer, Long> endOffsets(String bootstrap, String topic) {
        try (KafkaConsumer<byte[], byte[]> c = new KafkaConsumer<>(consumerProps(bootstrap, "compat-java-offsets", null))) {
            Map<Integer, Long> out = new TreeMap<>();
            c.endOffsets(tps(topic), Duration.ofMillis(JavaClient.STEP_TIMEOUT_MS)).forEach((tp, o) -> out.put(tp.partition(), o));
            return out;
        }
    }

    static Map<Integer, Long> committedOffsets(String bootstrap, String topic, String group) {
        // never subscribes: OffsetFetch only, no group membership
        try (KafkaConsumer<byte[], byte[]> c = new KafkaConsumer<>(consumerProps(bootstrap, "compat-java-committed", group))) {
            Map<Integer, Long> out = new TreeMap<>();
            Map<TopicPartition, OffsetAndMetadata> res = c.committed(new HashSet<>(tps(topic)),
                    Duration.ofMillis(JavaClient.STEP_TIMEOUT_MS));
            for (TopicPartition tp : tps(topic)) {
                OffsetAndMetadata om = res.get(tp);
                out.put(tp.partition(), om == null ? -1L : om.offset());
            }
            return out;
        }
    }

    static class Member extends Thread {
        final String bootstrap, topic, group, m;
        final Events ev;
        volatile boolean stop = false;

        Member(String bootstrap, String topic, String group, String m, Events ev) {
            super(m);
            setDaemon(true);
            this.bootstrap = bootstrap;
            this.topic = topic;
            this.group = group;
            this.m = m;
            this.ev = ev;
        }

        @Override
        public void run() {
            KafkaConsumer<byte[], byte[]> c = null;
            try {
                c = new KafkaConsumer<>(consumerProps(bootstrap, "compat-java-" + m, group));
                final KafkaConsumer<byte[], byte[]> consumer = c;
                c.subscribe(List.of(topic), new ConsumerRebalanceListener() {
                    public void onPartitionsRevoked(Collection<TopicPartition> ps) {
                        ev.revoke(m, partsOf(ps));
                    }

                    public void onPartitionsAssigned(Collection<TopicPartition> ps) {
                        ev.assign(m, partsOf(ps), consumer.groupMetadata().generationId());
                    }

                    public void onPartitionsLost(Collection<TopicPartition> ps) {
                        ev.revoke(m, partsOf(ps));
                    }
                });
                while (!stop) {
                    ConsumerRecords<byte[], byte[]> recs = c.poll(Duration.ofMillis(200));
                    Map<TopicPartition, OffsetAndMetadata> next = new LinkedHashMap<>();
                    for (ConsumerRecord<byte[], byte[]> r : recs) {
                        ev.rec(m, r.partition(), r.offset(), indexOfKey(r.key()));
                        Thread.sleep(PROCESS_DELAY_MS);
                        next.put(new TopicPartition(r.topic(), r.partition()), new OffsetAndMetadata(r.offset() + 1));
                    }
                    if (!next.isEmpty()) {
                        try {
                            c.commitSync(next, Duration.ofSeconds(30));
                            next.forEach((tp, om) -> ev.commit(m, tp.partition(), om.offset(), true, ""));
                        } catch (KafkaException e) {
                            next.forEach((tp, om) -> ev.commit(m, tp.partition(), om.offset(), false, JavaClient.err(e)));
                        }
                    }
                }
            } catch (Throwable e) {
                ev.error(m + ": " + JavaClient.err(e));
            } finally {
                ev.revoke(m, null);  // processes nothing from here on
                if (c != null) {
                    try {
                        c.close(Duration.ofSeconds(20));  // LeaveGroup
                    } catch (Throwable e) {
                        ev.error(m + ": close: " + JavaClient.err(e));
                    }
                }
            }
        }
    }

    static void consume(String bootstrap, String topic, List<String> members, Set<Integer> keys) throws Exception {
        Events ev = new Events(System.getenv("COMPAT_EVENTS"));
        String group = topic + "-g";
        Map<Integer, Long> ends = endOffsets(bootstrap, topic);
        ends.forEach((p, o) -> ev.write("end " + p + " " + o));
        List<Member> started = new ArrayList<>();
        try {
            boolean ok = true;
            int k = 0;
            for (String name : members) {
                k++;
                Member mem = new Member(bootstrap, topic, group, name, ev);
                mem.start();
                started.add(mem);
                long t0 = System.currentTimeMillis();
                while (!ev.stageReached(k) && System.currentTimeMillis() - t0 < STAGE_TIMEOUT_MS) Thread.sleep(50);
                if (!ev.stageReached(k)) {
                    ev.error("stage " + k + " (" + k + " members owning disjoint partitions covering all " + PARTITIONS
                            + ") not reached within " + STAGE_TIMEOUT_MS / 1000 + "s; ownership " + ev.ownership());
                    ok = false;
                    break;
                }
                ev.write("stage " + k);
                System.err.printf("%s: stage %d reached %.1fs after starting %s%n", CLIENT, k,
                        (System.currentTimeMillis() - t0) / 1e3, name);
            }
            if (ok) {
                long deadline = System.currentTimeMillis() + CONSUME_TIMEOUT_MS;
                while (!ev.done(keys, ends)) {
                    if (System.currentTimeMillis() > deadline) {
                        Set<Integer> missing = new HashSet<>(keys);
                        synchronized (ev) {
                            missing.removeAll(ev.seen);
                            ev.error("not everything consumed and committed within " + CONSUME_TIMEOUT_MS / 1000
                                    + "s of the last rebalance: " + missing.size() + " of " + keys.size()
                                    + " records missing, committed " + ev.committed + ", end offsets " + ends);
                        }
                        break;
                    }
                    Thread.sleep(50);
                }
            }
        } finally {
            for (int i = started.size() - 1; i >= 0; i--) {
                Member mem = started.get(i);
                mem.stop = true;
                mem.join(20_000);
                if (mem.isAlive()) ev.error("member " + mem.m + " did not close within 20s");
            }
        }
        committedOffsets(bootstrap, topic, group).forEach((p, o) -> ev.write("final " + p + " " + o));
    }

    static Set<Integer> range(int from, int count) {
        Set<Integer> s = new HashSet<>();
        for (int i = from; i < from + count; i++) s.add(i);
        return s;
    }

    static int main(String bootstrap, String topic, String mode) {
        try {
            switch (mode) {
                case "groups-produce": {
                    JavaClient.createTopic(bootstrap, topic);
                    Map<Integer, Integer> perP = produce(bootstrap, topic, 0, N_FIRST, Map.of());
                    if (perP.size() != PARTITIONS) throw new RuntimeException("records landed in partitions " + perP + " only");
                    System.out.println(CLIENT + " " + mode + " OK " + N_FIRST + " records, per partition " + perP);
                    break;
                }
                case "groups-consume":
                    consume(bootstrap, topic, List.of("c1", "c2", "c3"), range(0, N_FIRST));
                    break;
                default:
                    produce(bootstrap, topic, N_FIRST, N_MORE, endOffsets(bootstrap, topic));
                    consume(bootstrap, topic, List.of("r1"), range(N_FIRST, N_MORE));
            }
            return 0;
        } catch (Throwable e) {
            System.out.println(CLIENT + " " + mode + " FAIL " + JavaClient.err(e).replaceAll("\\s+", " "));
            return 1;
        } finally {
            System.out.flush();
        }
    }
}
