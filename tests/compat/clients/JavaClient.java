// Java kafka-clients (3.9.1) compatibility client.
//
// usage: java -cp 'java-classes:java-lib/*' JavaClient <bootstrap host:port> <topic-prefix> produce|verify
//
// produce: for each codec create <prefix>-<codec> (3 partitions, RF 1) with Admin, produce N records
//          with acks=all and compression.type=<codec> (record i to partition i % 3), wait for every
//          ack, then verify.
// verify:  for each codec and partition, assign (no group.id), read offset 0 .. endOffsets and check.
// groups-*: consumer-group scenario, see JavaGroups.java.

import java.nio.charset.StandardCharsets;
import java.time.Duration;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.HashSet;
import java.util.List;
import java.util.Properties;
import java.util.Set;
import java.util.concurrent.ConcurrentLinkedQueue;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.atomic.AtomicInteger;

import org.apache.kafka.clients.admin.Admin;
import org.apache.kafka.clients.admin.AdminClientConfig;
import org.apache.kafka.clients.admin.NewTopic;
import org.apache.kafka.clients.admin.TopicDescription;
import org.apache.kafka.clients.consumer.ConsumerConfig;
import org.apache.kafka.clients.consumer.ConsumerRecord;
import org.apache.kafka.clients.consumer.ConsumerRecords;
import org.apache.kafka.clients.consumer.KafkaConsumer;
import org.apache.kafka.clients.producer.KafkaProducer;
import org.apache.kafka.clients.producer.ProducerConfig;
import org.apache.kafka.clients.producer.ProducerRecord;
import org.apache.kafka.common.PartitionInfo;
import org.apache.kafka.common.TopicPartition;
import org.apache.kafka.common.serialization.ByteArrayDeserializer;
import org.apache.kafka.common.serialization.ByteArraySerializer;

public class JavaClient {
    static final String CLIENT = "java";
    static final int N = 10000;
    static final int PARTITIONS = 3;
    static final String[] CODECS = {"none", "gzip", "snappy", "lz4", "zstd"};
    static final long STEP_TIMEOUT_MS = 60_000;

    static int failed = 0;

    static byte[] keyOf(int i) {
        return ("k-" + i).getBytes(StandardCharsets.UTF_8);
    }

    static byte[] valueOf(int i) {
        return ("v-" + i + "-" + String.format("%05d", i).repeat(20)).getBytes(StandardCharsets.UTF_8);
    }

    static String topicOf(String prefix, String codec) {
        return prefix + "-" + codec;
    }

    static void ok(String codec, int count) {
        System.out.println(CLIENT + " " + codec + " " + count + " OK");
        System.out.flush();
    }

    static void fail(String codec, String reason) {
        failed++;
        System.out.println(CLIENT + " " + codec + " FAIL " + reason.replaceAll("\\s+", " "));
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
        p.put("request.timeout.ms", "30000");
        p.put("default.api.timeout.ms", String.valueOf(STEP_TIMEOUT_MS));
        p.put("reconnect.backoff.max.ms", "1000");
        return p;
    }

    static void createTopic(String bootstrap, String topic) throws Exception {
        Properties p = common(bootstrap, "compat-java-admin");
        p.remove("default.api.timeout.ms");
        p.put(AdminClientConfig.DEFAULT_API_TIMEOUT_MS_CONFIG, String.valueOf(STEP_TIMEOUT_MS));
        Admin admin = Admin.create(p);
        try {
            long deadline = System.currentTimeMillis() + STEP_TIMEOUT_MS;
            admin.createTopics(List.of(new NewTopic(topic, PARTITIONS, (short) 1)))
                 .all().get(STEP_TIMEOUT_MS, TimeUnit.MILLISECONDS);
            String last = "";
            while (true) {
                try {
                    TopicDescription d = admin.describeTopics(List.of(topic)).allTopicNames()
                            .get(10, TimeUnit.SECONDS).get(topic);
                    if (d.partitions().size() == PARTITIONS
                            && d.partitions().stream().allMatch(pi -> pi.leader() != null && pi.leader().id() >= 0)) {
                        return;
                    }
                    last = "partitions " + d.partitions();
                } catch (Exception e) {
                    last = err(e);
                }
                if (System.currentTimeMillis() > deadline) {
                    throw new RuntimeException("topic not ready after " + STEP_TIMEOUT_MS / 1000 + "s: " + last);
                }
                Thread.sleep(200);
            }
        } finally {
            admin.close(Duration.ofSeconds(10));
        }
    }

    static void produce(String bootstrap, String topic, String codec) throws Exception {
        Properties p = common(bootstrap, "compat-java-producer");
        p.remove("default.api.timeout.ms");
        p.put(ProducerConfig.ACKS_CONFIG, "all");
        p.put(ProducerConfig.COMPRESSION_TYPE_CONFIG, codec);
        p.put(ProducerConfig.LINGER_MS_CONFIG, "5");
        p.put(ProducerConfig.MAX_BLOCK_MS_CONFIG, String.valueOf(STEP_TIMEOUT_MS));
        p.put(ProducerConfig.DELIVERY_TIMEOUT_MS_CONFIG, String.valueOf(STEP_TIMEOUT_MS));
        p.put(ProducerConfig.KEY_SERIALIZER_CLASS_CONFIG, ByteArraySerializer.class.getName());
        p.put(ProducerConfig.VALUE_SERIALIZER_CLASS_CONFIG, ByteArraySerializer.class.getName());
        ConcurrentLinkedQueue<String> failures = new ConcurrentLinkedQueue<>();
        AtomicInteger acked = new AtomicInteger();
        KafkaProducer<byte[], byte[]> producer = new KafkaProducer<>(p);
        try {
            List<PartitionInfo> parts = producer.partitionsFor(topic);
            if (parts.size() != PARTITIONS) {
                throw new RuntimeException("producer metadata: topic " + topic + " has " + parts.size()
                        + " partitions, expected " + PARTITIONS);
            }
            for (int i = 0; i < N; i++) {
                final int idx = i;
                producer.send(new ProducerRecord<>(topic, i % PARTITIONS, keyOf(i), valueOf(i)), (md, e) -> {
                    if (e != null) {
                        failures.add("record " + idx + ": " + err(e));
                    } else if (md.partition() != idx % PARTITIONS || md.offset() != idx / PARTITIONS) {
                        failures.add("record " + idx + " acked at partition " + md.partition() + " offset "
                                + md.offset() + ", expected " + idx % PARTITIONS + "/" + idx / PARTITIONS);
                    } else {
                        acked.incrementAndGet();
                    }
                });
            }
            producer.flush();
            // flush() waits for all sends; delivery.timeout.ms bounds it.
            if (!failures.isEmpty()) {
                throw new RuntimeException(failures.size() + " delivery failures, first: " + failures.peek());
            }
            if (acked.get() != N) {
                throw new RuntimeException((N - acked.get()) + " of " + N + " records not acknowledged");
            }
        } finally {
            producer.close(Duration.ofSeconds(10));
        }
    }

    static int readPartition(KafkaConsumer<byte[], byte[]> consumer, String topic, int p) {
        TopicPartition tp = new TopicPartition(topic, p);
        consumer.assign(List.of(tp));
        long end = consumer.endOffsets(List.of(tp), Duration.ofMillis(STEP_TIMEOUT_MS)).get(tp);
        consumer.seek(tp, 0);
        int expected = 0;
        for (int i = p; i < N; i += PARTITIONS) expected++;
        if (end != expected) {
            throw new RuntimeException("partition " + p + ": end offset " + end + ", expected " + expected);
        }
        long deadline = System.currentTimeMillis() + STEP_TIMEOUT_MS;
        long nextOff = 0;
        int count = 0;
        long prevI = -1;
        while (nextOff < end) {
            if (System.currentTimeMillis() > deadline) {
                throw new RuntimeException("partition " + p + ": timed out after " + STEP_TIMEOUT_MS / 1000
                        + "s having read " + count + " of " + end + " records");
            }
            ConsumerRecords<byte[], byte[]> recs = consumer.poll(Duration.ofMillis(500));
            for (ConsumerRecord<byte[], byte[]> r : recs) {
                if (!r.topic().equals(topic) || r.partition() != p) {
                    throw new RuntimeException("got record for unassigned " + r.topic() + "[" + r.partition() + "]");
                }
                if (r.offset() != count) {
                    throw new RuntimeException("partition " + p + ": offsets not contiguous from 0: record #"
                            + count + " has offset " + r.offset());
                }
                String v = r.value() == null ? null : new String(r.value(), StandardCharsets.UTF_8);
                long gotI = -1;
                try {
                    gotI = Long.parseLong(v.split("-")[1]);
                } catch (Exception e) {
                    // leave -1
                }
                if (prevI >= 0 && gotI <= prevI) {
                    throw new RuntimeException("partition " + p + " offset " + r.offset() + ": value index "
                            + gotI + " not > previous " + prevI);
                }
                int i = p + count * PARTITIONS;
                if (r.key() == null || !Arrays.equals(r.key(), keyOf(i))) {
                    throw new RuntimeException("partition " + p + " offset " + r.offset() + ": key "
                            + (r.key() == null ? "null" : new String(r.key(), StandardCharsets.UTF_8))
                            + ", expected k-" + i);
                }
                if (r.value() == null || !Arrays.equals(r.value(), valueOf(i))) {
                    throw new RuntimeException("partition " + p + " offset " + r.offset() + ": value "
                            + (v == null ? "null" : v.substring(0, Math.min(40, v.length())))
                            + ", expected v-" + i + "-...");
                }
                prevI = gotI;
                count++;
                nextOff = r.offset() + 1;
            }
        }
        if (count != end) {
            throw new RuntimeException("partition " + p + ": read " + count + " records, end offset is " + end);
        }
        return count;
    }

    static void verify(String bootstrap, String prefix, List<String> codecs) {
        Properties p = common(bootstrap, "compat-java-consumer");
        // no group.id: manual assignment only, no group coordinator involved
        p.put(ConsumerConfig.ENABLE_AUTO_COMMIT_CONFIG, "false");
        p.put(ConsumerConfig.AUTO_OFFSET_RESET_CONFIG, "none");
        p.put(ConsumerConfig.ALLOW_AUTO_CREATE_TOPICS_CONFIG, "false");
        p.put(ConsumerConfig.KEY_DESERIALIZER_CLASS_CONFIG, ByteArrayDeserializer.class.getName());
        p.put(ConsumerConfig.VALUE_DESERIALIZER_CLASS_CONFIG, ByteArrayDeserializer.class.getName());
        try (KafkaConsumer<byte[], byte[]> consumer = new KafkaConsumer<>(p)) {
            for (String codec : codecs) {
                String topic = topicOf(prefix, codec);
                try {
                    List<PartitionInfo> parts = consumer.partitionsFor(topic, Duration.ofMillis(STEP_TIMEOUT_MS));
                    Set<Integer> ids = new HashSet<>();
                    for (PartitionInfo pi : parts) ids.add(pi.partition());
                    Set<Integer> want = new HashSet<>();
                    for (int i = 0; i < PARTITIONS; i++) want.add(i);
                    if (!ids.equals(want)) {
                        throw new RuntimeException("metadata: topic " + topic + " has partitions " + ids
                                + ", expected " + PARTITIONS);
                    }
                    int total = 0;
                    for (int part = 0; part < PARTITIONS; part++) {
                        total += readPartition(consumer, topic, part);
                    }
                    if (total != N) {
                        throw new RuntimeException("read " + total + " records in total, expected " + N);
                    }
                    ok(codec, total);
                } catch (Exception e) {
                    fail(codec, "verify: " + err(e));
                }
            }
            consumer.unsubscribe();
        }
    }

    public static void main(String[] args) {
        if (args.length == 3 && args[2].startsWith("groups-")
                && List.of("groups-produce", "groups-consume", "groups-resume").contains(args[2])) {
            System.exit(JavaGroups.main(args[0], args[1], args[2]));  // consumer-group scenario
        }
        if (args.length != 3 || !(args[2].equals("produce") || args[2].equals("verify"))) {
            System.err.println("usage: JavaClient <bootstrap host:port> <topic-prefix> produce|verify");
            System.err.println("       JavaClient <bootstrap host:port> <topic> groups-produce|groups-consume|groups-resume");
            System.exit(2);
        }
        String bootstrap = args[0], prefix = args[1], mode = args[2];
        List<String> codecs = new ArrayList<>(Arrays.asList(CODECS));
        try {
            if (mode.equals("produce")) {
                for (String codec : CODECS) {
                    String topic = topicOf(prefix, codec);
                    long t0 = System.nanoTime();
                    try {
                        createTopic(bootstrap, topic);
                    } catch (Exception e) {
                        fail(codec, "create topic " + topic + ": " + err(e));
                        codecs.remove(codec);
                        continue;
                    }
                    try {
                        produce(bootstrap, topic, codec);
                    } catch (Exception e) {
                        fail(codec, "produce to " + topic + ": " + err(e));
                        codecs.remove(codec);
                        continue;
                    }
                    System.err.printf("%s: produced %d records to %s in %.1fs%n", CLIENT, N, topic,
                            (System.nanoTime() - t0) / 1e9);
                }
            }
            if (!codecs.isEmpty()) verify(bootstrap, prefix, codecs);
        } catch (Throwable e) {
            fail("all", err(e));
        }
        System.exit(failed > 0 ? 1 : 0);
    }
}
