// Acceptance: the stock Java client (kafka-clients 3.9.1) keeps producing across a kill -9 of a
// partition leader in a 3-node cluster, without surfacing errors, losing or duplicating
// acknowledged records, or reordering a key's records.
//
// usage: java -cp 'classes:java-lib/*' JavaFailover <bootstrap> <topic> <kill-command>
//
// 1. Admin: create <topic> (3 partitions, replication factor 3, min.insync.replicas=2) and wait
//    until every partition has 3 in-sync replicas.
// 2. An idempotent producer (acks=all, delivery.timeout.ms=120000, request.timeout.ms=10000,
//    default retries) sends keyed records (keys k0..k9, value "<key>-<seq>" with a per-key seq) at
//    ~300 records/s for ~14 s, recording every acknowledged (partition, offset, value).
// 3. After ~4 s: look up the leader of partition 0 and run `bash -c "<kill-command> <leaderId>"`
//    (which kills -9 that node; it is not restarted). The failover time is measured from the end
//    of the kill until the first acknowledgement on partition 0 at an offset above every offset
//    acknowledged on it before the kill.
// 4. flush + close, then read every partition (assign, no group) from the beginning to its end
//    offset and check: every acknowledged value is in the log exactly once, at the acknowledged
//    (partition, offset); per key, offsets increase with seq; no send failed.
// Prints `java failover: sent=.. acked=.. failed=.. lost=.. duplicated=.. failover_ms=..` (plus
// diagnostic lines before it) and exits 0 only if everything holds.

import java.time.Duration;
import java.util.ArrayList;
import java.util.HashMap;
import java.util.List;
import java.util.Map;
import java.util.Properties;
import java.util.concurrent.ExecutionException;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.atomic.AtomicInteger;

import org.apache.kafka.clients.admin.Admin;
import org.apache.kafka.clients.admin.AdminClientConfig;
import org.apache.kafka.clients.admin.NewTopic;
import org.apache.kafka.clients.admin.TopicDescription;
import org.apache.kafka.clients.consumer.ConsumerConfig;
import org.apache.kafka.clients.consumer.ConsumerRecord;
import org.apache.kafka.clients.consumer.KafkaConsumer;
import org.apache.kafka.clients.producer.KafkaProducer;
import org.apache.kafka.clients.producer.ProducerConfig;
import org.apache.kafka.clients.producer.ProducerRecord;
import org.apache.kafka.common.TopicPartition;
import org.apache.kafka.common.TopicPartitionInfo;
import org.apache.kafka.common.errors.TopicExistsException;
import org.apache.kafka.common.serialization.StringDeserializer;
import org.apache.kafka.common.serialization.StringSerializer;

public class JavaFailover {
    static final int PARTITIONS = 3;
    static final int KEYS = 10;
    static final long PRODUCE_MS = 14_000;
    static final long KILL_AT_MS = 4_000;
    static final double RATE_PER_MS = 0.3; // ~300 records/s
    static final long STEP_TIMEOUT_MS = 60_000;

    /** One acknowledged record. */
    record Ack(int key, int seq, String value, int partition, long offset, long atNanos) {}

    static final List<Ack> acks = new ArrayList<>(); // guarded by itself
    static final List<String> failures = new ArrayList<>(); // guarded by acks
    static final AtomicInteger failedCount = new AtomicInteger();

    static void log(String msg) {
        System.out.println("[java-failover] " + msg);
        System.out.flush();
    }

    static String err(Throwable e) {
        StringBuilder sb = new StringBuilder();
        Throwable t = e;
        while (t != null) {
            if (sb.length() > 0) sb.append(" <- ");
            sb.append(t.getClass().getSimpleName()).append(": ").append(t.getMessage());
            if (t.getCause() == t) break;
            t = t.getCause();
        }
        return sb.toString();
    }

    static Properties common(String bootstrap, String clientId) {
        Properties p = new Properties();
        p.put("bootstrap.servers", bootstrap);
        p.put("client.id", clientId);
        p.put("reconnect.backoff.max.ms", "1000");
        return p;
    }

    static TopicDescription describe(Admin admin, String topic) throws Exception {
        return admin.describeTopics(List.of(topic)).allTopicNames().get(10, TimeUnit.SECONDS).get(topic);
    }

    static void createTopic(Admin admin, String topic) throws Exception {
        long deadline = System.currentTimeMillis() + STEP_TIMEOUT_MS;
        String last = "";
        // the brokers may not all be registered yet (replication factor 3 needs all three)
        while (true) {
            try {
                admin.createTopics(List.of(new NewTopic(topic, PARTITIONS, (short) 3)
                        .configs(Map.of("min.insync.replicas", "2"))))
                     .all().get(STEP_TIMEOUT_MS, TimeUnit.MILLISECONDS);
                break;
            } catch (ExecutionException e) {
                if (e.getCause() instanceof TopicExistsException) break;
                last = err(e);
            }
            if (System.currentTimeMillis() > deadline) {
                throw new RuntimeException("create topic " + topic + " failed for " + STEP_TIMEOUT_MS / 1000
                        + "s, last error: " + last);
            }
            Thread.sleep(500);
        }
        while (true) {
            try {
                TopicDescription d = describe(admin, topic);
                if (d.partitions().size() == PARTITIONS && d.partitions().stream().allMatch(
                        pi -> pi.leader() != null && pi.leader().id() >= 0 && pi.isr().size() == 3)) {
                    for (TopicPartitionInfo pi : d.partitions()) {
                        log("partition " + pi.partition() + ": leader " + pi.leader().id() + ", replicas "
                                + ids(pi.replicas()) + ", isr " + ids(pi.isr()));
                    }
                    return;
                }
                last = "partitions " + d.partitions();
            } catch (Exception e) {
                last = err(e);
            }
            if (System.currentTimeMillis() > deadline) {
                throw new RuntimeException("topic " + topic + " not fully in sync after " + STEP_TIMEOUT_MS / 1000
                        + "s: " + last);
            }
            Thread.sleep(200);
        }
    }

    static String ids(List<org.apache.kafka.common.Node> nodes) {
        List<Integer> out = new ArrayList<>();
        for (org.apache.kafka.common.Node n : nodes) out.add(n.id());
        return out.toString();
    }

    public static void main(String[] args) throws Exception {
        if (args.length != 3) {
            System.err.println("usage: JavaFailover <bootstrap> <topic> <kill-command>");
            System.exit(2);
        }
        String bootstrap = args[0], topic = args[1], killCommand = args[2];

        Properties ap = common(bootstrap, "failover-admin");
        ap.put(AdminClientConfig.REQUEST_TIMEOUT_MS_CONFIG, "10000");
        ap.put(AdminClientConfig.DEFAULT_API_TIMEOUT_MS_CONFIG, String.valueOf(STEP_TIMEOUT_MS));
        Admin admin = Admin.create(ap);
        createTopic(admin, topic);

        Properties pp = common(bootstrap, "failover-producer");
        pp.put(ProducerConfig.ACKS_CONFIG, "all");
        pp.put(ProducerConfig.ENABLE_IDEMPOTENCE_CONFIG, "true");
        pp.put(ProducerConfig.DELIVERY_TIMEOUT_MS_CONFIG, "120000");
        pp.put(ProducerConfig.REQUEST_TIMEOUT_MS_CONFIG, "10000");
        pp.put(ProducerConfig.KEY_SERIALIZER_CLASS_CONFIG, StringSerializer.class.getName());
        pp.put(ProducerConfig.VALUE_SERIALIZER_CLASS_CONFIG, StringSerializer.class.getName());
        KafkaProducer<String, String> producer = new KafkaProducer<>(pp);

        // the kill runs in its own thread so that the send loop keeps its pace
        long[] kill = {-1, -1}; // {start, done} nanos; written by the kill thread
        int[] killed = {-1, -1}; // {leader id, exit code}
        String[] killError = {null};
        long t0 = System.nanoTime();
        Thread killer = new Thread(() -> {
            try {
                Thread.sleep(KILL_AT_MS);
                int leader = describe(admin, topic).partitions().get(0).leader().id();
                killed[0] = leader;
                log("killing node " + leader + " (leader of " + topic + "-0) at "
                        + (System.nanoTime() - t0) / 1_000_000 + " ms: " + killCommand + " " + leader);
                kill[0] = System.nanoTime();
                Process proc = new ProcessBuilder("bash", "-c", killCommand + " " + leader).inheritIO().start();
                killed[1] = proc.waitFor();
                kill[1] = System.nanoTime();
                log("kill command exited with " + killed[1] + " after " + (kill[1] - kill[0]) / 1_000_000 + " ms");
            } catch (Exception e) {
                killError[0] = err(e);
                log("kill failed: " + killError[0]);
            }
        }, "killer");
        killer.start();

        int[] seqs = new int[KEYS];
        int sent = 0;
        while (true) {
            long elapsedMs = (System.nanoTime() - t0) / 1_000_000;
            if (elapsedMs >= PRODUCE_MS) break;
            long target = (long) (elapsedMs * RATE_PER_MS) + 1;
            while (sent < target) {
                int key = sent % KEYS;
                int seq = seqs[key]++;
                String k = "k" + key;
                String value = k + "-" + seq;
                producer.send(new ProducerRecord<>(topic, k, value), (md, e) -> {
                    long now = System.nanoTime();
                    synchronized (acks) {
                        if (e != null) {
                            failedCount.incrementAndGet();
                            if (failures.size() < 10) failures.add(value + ": " + err(e));
                        } else {
                            acks.add(new Ack(key, seq, value, md.partition(), md.offset(), now));
                        }
                    }
                });
                sent++;
            }
            Thread.sleep(2);
        }
        long sendDone = System.nanoTime();
        producer.flush();
        log("sent " + sent + " records in " + (sendDone - t0) / 1_000_000 + " ms; flush took "
                + (System.nanoTime() - sendDone) / 1_000_000 + " ms");
        producer.close(Duration.ofSeconds(30));
        killer.join(30_000);

        List<Ack> acked;
        synchronized (acks) {
            acked = new ArrayList<>(acks);
            for (String f : failures) log("send failed: " + f);
        }
        int failed = failedCount.get();
        boolean ok = true;
        if (acked.size() + failed != sent) {
            log("FAIL " + (sent - acked.size() - failed) + " sends got no callback after flush/close");
            ok = false;
        }
        if (killError[0] != null || killed[1] != 0) {
            log("FAIL the kill command did not succeed (exit code " + killed[1] + ", error " + killError[0] + ")");
            ok = false;
        }

        // failover time: first ack on partition 0 after the kill, above everything acked before it
        long failoverMs = -1;
        if (kill[1] > 0) {
            long maxBefore = -1;
            for (Ack a : acked) {
                if (a.partition() == 0 && a.atNanos() <= kill[1]) maxBefore = Math.max(maxBefore, a.offset());
            }
            long first = Long.MAX_VALUE;
            for (Ack a : acked) {
                if (a.partition() == 0 && a.atNanos() > kill[1] && a.offset() > maxBefore) {
                    first = Math.min(first, a.atNanos());
                }
            }
            if (first != Long.MAX_VALUE) failoverMs = (first - kill[1]) / 1_000_000;
            log("partition 0: highest offset acknowledged before the kill " + maxBefore);
        }
        if (failoverMs < 0) {
            log("FAIL no acknowledgement on partition 0 after the kill");
            ok = false;
        }

        // read everything back
        Properties cp = common(bootstrap, "failover-consumer");
        cp.put(ConsumerConfig.ENABLE_AUTO_COMMIT_CONFIG, "false");
        cp.put(ConsumerConfig.AUTO_OFFSET_RESET_CONFIG, "earliest");
        cp.put(ConsumerConfig.ALLOW_AUTO_CREATE_TOPICS_CONFIG, "false");
        cp.put(ConsumerConfig.REQUEST_TIMEOUT_MS_CONFIG, "10000");
        cp.put(ConsumerConfig.DEFAULT_API_TIMEOUT_MS_CONFIG, String.valueOf(STEP_TIMEOUT_MS));
        cp.put(ConsumerConfig.KEY_DESERIALIZER_CLASS_CONFIG, StringDeserializer.class.getName());
        cp.put(ConsumerConfig.VALUE_DESERIALIZER_CLASS_CONFIG, StringDeserializer.class.getName());
        Map<String, String> logAt = new HashMap<>(); // "p/offset" -> value
        Map<String, Integer> valueCount = new HashMap<>();
        Map<String, List<String>> valueAt = new HashMap<>();
        try (KafkaConsumer<String, String> consumer = new KafkaConsumer<>(cp)) {
            List<TopicPartition> tps = new ArrayList<>();
            for (int p = 0; p < PARTITIONS; p++) tps.add(new TopicPartition(topic, p));
            consumer.assign(tps);
            consumer.seekToBeginning(tps);
            Map<TopicPartition, Long> end = consumer.endOffsets(tps, Duration.ofMillis(STEP_TIMEOUT_MS));
            log("end offsets " + end);
            long deadline = System.currentTimeMillis() + STEP_TIMEOUT_MS;
            while (true) {
                boolean done = true;
                for (TopicPartition tp : tps) {
                    if (consumer.position(tp) < end.get(tp)) done = false;
                }
                if (done) break;
                if (System.currentTimeMillis() > deadline) {
                    throw new RuntimeException("reading back timed out after " + STEP_TIMEOUT_MS / 1000 + "s");
                }
                for (ConsumerRecord<String, String> r : consumer.poll(Duration.ofMillis(500))) {
                    if (r.offset() >= end.get(new TopicPartition(r.topic(), r.partition()))) continue;
                    String where = r.partition() + "/" + r.offset();
                    logAt.put(where, r.value());
                    valueCount.merge(r.value(), 1, Integer::sum);
                    valueAt.computeIfAbsent(r.value(), v -> new ArrayList<>()).add(where);
                }
            }
        }

        int lost = 0, duplicated = 0, misplaced = 0;
        List<String> examples = new ArrayList<>();
        for (Ack a : acked) {
            int n = valueCount.getOrDefault(a.value(), 0);
            if (n == 0) {
                lost++;
                if (examples.size() < 10) examples.add("lost " + a.value() + " (acked at " + a.partition() + "/" + a.offset() + ")");
            }
            String at = logAt.get(a.partition() + "/" + a.offset());
            if (n > 0 && !a.value().equals(at)) {
                misplaced++;
                if (examples.size() < 10) {
                    examples.add(a.value() + " acked at " + a.partition() + "/" + a.offset() + " but that offset holds "
                            + at + "; the value is at " + valueAt.get(a.value()));
                }
            }
        }
        for (Map.Entry<String, Integer> e : valueCount.entrySet()) {
            if (e.getValue() > 1) {
                duplicated++;
                if (examples.size() < 10) examples.add("duplicated " + e.getKey() + " at " + valueAt.get(e.getKey()));
            }
        }
        // per key, offsets increase with seq (all of a key's records go to one partition)
        int orderViolations = 0;
        Map<Integer, List<Ack>> byKey = new HashMap<>();
        for (Ack a : acked) byKey.computeIfAbsent(a.key(), k -> new ArrayList<>()).add(a);
        for (List<Ack> l : byKey.values()) {
            l.sort((x, y) -> Integer.compare(x.seq(), y.seq()));
            for (int i = 1; i < l.size(); i++) {
                Ack prev = l.get(i - 1), cur = l.get(i);
                if (cur.partition() != prev.partition() || cur.offset() <= prev.offset()) {
                    orderViolations++;
                    if (examples.size() < 10) {
                        examples.add("order: " + prev.value() + " at " + prev.partition() + "/" + prev.offset()
                                + " then " + cur.value() + " at " + cur.partition() + "/" + cur.offset());
                    }
                }
            }
        }
        for (String ex : examples) log(ex);
        if (misplaced > 0) log("FAIL " + misplaced + " acknowledged values are not at their acknowledged offset");
        if (orderViolations > 0) log("FAIL " + orderViolations + " per-key ordering violations");
        ok = ok && lost == 0 && duplicated == 0 && failed == 0 && misplaced == 0 && orderViolations == 0;
        admin.close(Duration.ofSeconds(10));
        System.out.println("java failover: sent=" + sent + " acked=" + acked.size() + " failed=" + failed
                + " lost=" + lost + " duplicated=" + duplicated + " failover_ms=" + failoverMs);
        System.out.flush();
        System.exit(ok ? 0 : 1);
    }
}
