// sarama (Go, Debian golang-github-shopify-sarama-dev 1.22) compatibility client: consumer-group
// scenario only (see group_check.py for the event log format).
//
// build: GO111MODULE=off GOPATH=/usr/share/gocode go build -o sarama-client sarama_client.go
// usage: sarama-client <bootstrap host:port> <topic> groups-produce|groups-consume|groups-resume
//
// groups-produce: create <topic> (3 partitions) with ClusterAdmin, idempotent produce
//
//	(Producer.Idempotent, Net.MaxOpenRequests=1, acks=all, default hash partitioner)
//	of keys k-0..k-999, check the offsets.
//
// groups-consume: 3 ConsumerGroup members (goroutines) join group <topic>-g one by one, each
//
//	processing records and committing synchronously after each batch; events go to
//	$COMPAT_EVENTS. sarama 1.22 has no synchronous commit in its group session (its
//	offset manager commits marked offsets every CommitInterval), so the commit is an
//	OffsetCommitRequest (v1, like sarama's own) with the session's member id and
//	generation sent to the group coordinator through sarama's Broker.CommitOffset.
//
// groups-resume:  produce k-1000..k-1099, then ONE new consumer in the group must read exactly those.
package main

import (
	"context"
	"fmt"
	"log"
	"os"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/Shopify/sarama"
)

const (
	client         = "sarama"
	partitions     = 3
	nFirst         = 1000
	nMore          = 100
	stepTimeout    = 60 * time.Second
	stageTimeout   = 20 * time.Second
	consumeTimeout = 30 * time.Second
	maxBatch       = 10
	processDelay   = 10 * time.Millisecond
)

func keyOf(i int) []byte   { return []byte(fmt.Sprintf("k-%d", i)) }
func valueOf(i int) []byte { return []byte(fmt.Sprintf("g-%d", i)) }
func indexOfKey(k []byte) int {
	s := string(k)
	if !strings.HasPrefix(s, "k-") {
		return -1
	}
	i, err := strconv.Atoi(s[2:])
	if err != nil {
		return -1
	}
	return i
}

func fmtParts(ps []int32) string {
	if len(ps) == 0 {
		return "-"
	}
	s := append([]int32(nil), ps...)
	sort.Slice(s, func(a, b int) bool { return s[a] < s[b] })
	out := make([]string, len(s))
	for i, p := range s {
		out[i] = strconv.Itoa(int(p))
	}
	return strings.Join(out, ",")
}

func oneLine(s string) string { return strings.Join(strings.Fields(s), " ") }

func config(clientID string) *sarama.Config {
	c := sarama.NewConfig()
	c.ClientID = clientID
	c.Version = sarama.V2_1_0_0
	c.Net.DialTimeout = 10 * time.Second
	c.Net.ReadTimeout = 30 * time.Second
	c.Net.WriteTimeout = 30 * time.Second
	c.Metadata.Retry.Max = 10
	c.Metadata.Retry.Backoff = 200 * time.Millisecond
	return c
}

// ------------------------------------------------------------------ event log + state
type events struct {
	mu        sync.Mutex
	f         *os.File
	owned     map[string]map[int32]bool
	seen      map[int]bool
	committed map[int32]int64
}

func newEvents(path string) *events {
	f, err := os.OpenFile(path, os.O_APPEND|os.O_CREATE|os.O_WRONLY, 0644)
	if err != nil {
		panic(err)
	}
	ev := &events{f: f, owned: map[string]map[int32]bool{}, seen: map[int]bool{}, committed: map[int32]int64{}}
	ev.write("strict 1")
	return ev
}

func (e *events) write(line string) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.writeLocked(line)
}
func (e *events) writeLocked(line string) { fmt.Fprintln(e.f, line) }

func (e *events) assign(m string, ps []int32, gen int32) {
	e.mu.Lock()
	defer e.mu.Unlock()
	s := map[int32]bool{}
	for _, p := range ps {
		s[p] = true
	}
	e.owned[m] = s
	e.writeLocked(fmt.Sprintf("assign %s %d %s", m, gen, fmtParts(ps)))
}

func (e *events) revoke(m string) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.owned[m] = map[int32]bool{}
	e.writeLocked("revoke " + m + " *")
}

func (e *events) rec(m string, p int32, o int64, i int) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.seen[i] = true
	e.writeLocked(fmt.Sprintf("rec %s %d %d %d", m, p, o, i))
}

func (e *events) commit(m string, p int32, next int64, err error) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if err == nil {
		if next > e.committed[p] {
			e.committed[p] = next
		}
		e.writeLocked(fmt.Sprintf("commit %s %d %d ok", m, p, next))
	} else {
		e.writeLocked(fmt.Sprintf("commit %s %d %d fail %s", m, p, next, oneLine(err.Error())))
	}
}

func (e *events) error(text string) { e.write("error " + oneLine(text)) }

func (e *events) stageReached(k int) bool {
	e.mu.Lock()
	defer e.mu.Unlock()
	owners, total := 0, 0
	union := map[int32]bool{}
	for _, s := range e.owned {
		if len(s) == 0 {
			continue
		}
		owners++
		total += len(s)
		for p := range s {
			union[p] = true
		}
	}
	return owners == k && total == len(union) && len(union) == partitions
}

func (e *events) done(keys map[int]bool, ends map[int32]int64) bool {
	e.mu.Lock()
	defer e.mu.Unlock()
	for i := range keys {
		if !e.seen[i] {
			return false
		}
	}
	for p, o := range ends {
		if e.committed[p] < o {
			return false
		}
	}
	return true
}

func (e *events) ownership() string {
	e.mu.Lock()
	defer e.mu.Unlock()
	var parts []string
	for m, s := range e.owned {
		var ps []int32
		for p := range s {
			ps = append(ps, p)
		}
		parts = append(parts, m+":"+fmtParts(ps))
	}
	sort.Strings(parts)
	return strings.Join(parts, " ")
}

// ------------------------------------------------------------------ admin helpers
func createTopic(boot, topic string) error {
	admin, err := sarama.NewClusterAdmin([]string{boot}, config("compat-sarama-admin"))
	if err != nil {
		return fmt.Errorf("NewClusterAdmin: %v", err)
	}
	defer admin.Close()
	if err := admin.CreateTopic(topic, &sarama.TopicDetail{NumPartitions: partitions, ReplicationFactor: 1}, false); err != nil {
		return fmt.Errorf("CreateTopic: %v", err)
	}
	// wait until every partition has a leader
	cl, err := sarama.NewClient([]string{boot}, config("compat-sarama-meta"))
	if err != nil {
		return err
	}
	defer cl.Close()
	deadline := time.Now().Add(stepTimeout)
	for {
		_ = cl.RefreshMetadata(topic)
		ps, err := cl.Partitions(topic)
		if err == nil && len(ps) == partitions {
			ok := true
			for _, p := range ps {
				if _, err := cl.Leader(topic, p); err != nil {
					ok = false
				}
			}
			if ok {
				return nil
			}
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("topic %s not ready after %v: partitions %v, %v", topic, stepTimeout, ps, err)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

func endOffsets(boot, topic string) (map[int32]int64, error) {
	cl, err := sarama.NewClient([]string{boot}, config("compat-sarama-offsets"))
	if err != nil {
		return nil, err
	}
	defer cl.Close()
	out := map[int32]int64{}
	for p := int32(0); p < partitions; p++ {
		o, err := cl.GetOffset(topic, p, sarama.OffsetNewest)
		if err != nil {
			return nil, fmt.Errorf("end offset of partition %d: %v", p, err)
		}
		out[p] = o
	}
	return out, nil
}

func committedOffsets(boot, topic, group string) (map[int32]int64, error) {
	admin, err := sarama.NewClusterAdmin([]string{boot}, config("compat-sarama-committed"))
	if err != nil {
		return nil, err
	}
	defer admin.Close()
	resp, err := admin.ListConsumerGroupOffsets(group, map[string][]int32{topic: {0, 1, 2}})
	if err != nil {
		return nil, fmt.Errorf("ListConsumerGroupOffsets: %v", err)
	}
	if resp.Err != sarama.ErrNoError {
		return nil, fmt.Errorf("OffsetFetch: %v", resp.Err)
	}
	out := map[int32]int64{}
	for p := int32(0); p < partitions; p++ {
		b := resp.GetBlock(topic, p)
		if b == nil {
			return nil, fmt.Errorf("OffsetFetch: no block for partition %d", p)
		}
		if b.Err != sarama.ErrNoError {
			return nil, fmt.Errorf("OffsetFetch partition %d: %v", p, b.Err)
		}
		out[p] = b.Offset
	}
	return out, nil
}

// ------------------------------------------------------------------ produce
func produce(boot, topic string, first, count int) (map[int32]int, error) {
	before, err := endOffsets(boot, topic)
	if err != nil {
		return nil, err
	}
	c := config("compat-sarama-gproducer")
	c.Producer.Idempotent = true
	c.Net.MaxOpenRequests = 1
	c.Producer.RequiredAcks = sarama.WaitForAll
	c.Producer.Retry.Max = 10
	c.Producer.Retry.Backoff = 200 * time.Millisecond
	c.Producer.Return.Successes = true
	c.Producer.Timeout = 30 * time.Second
	p, err := sarama.NewSyncProducer([]string{boot}, c)
	if err != nil {
		return nil, fmt.Errorf("NewSyncProducer: %v", err)
	}
	msgs := make([]*sarama.ProducerMessage, 0, count)
	for i := first; i < first+count; i++ {
		msgs = append(msgs, &sarama.ProducerMessage{Topic: topic, Key: sarama.ByteEncoder(keyOf(i)), Value: sarama.ByteEncoder(valueOf(i))})
	}
	errc := make(chan error, 1)
	go func() { errc <- p.SendMessages(msgs) }()
	select {
	case err = <-errc:
	case <-time.After(stepTimeout):
		return nil, fmt.Errorf("SendMessages: no result after %v", stepTimeout)
	}
	if cerr := p.Close(); err == nil && cerr != nil {
		err = cerr
	}
	if err != nil {
		if pe, ok := err.(sarama.ProducerErrors); ok && len(pe) > 0 {
			return nil, fmt.Errorf("%d delivery failures, first: %v", len(pe), pe[0].Err)
		}
		return nil, err
	}
	byP := map[int32][]int64{}
	for _, m := range msgs {
		byP[m.Partition] = append(byP[m.Partition], m.Offset)
	}
	perP := map[int32]int{}
	for part, offs := range byP {
		sort.Slice(offs, func(a, b int) bool { return offs[a] < offs[b] })
		for j, o := range offs {
			if o != before[part]+int64(j) {
				return nil, fmt.Errorf("partition %d: acked offsets not contiguous from %d: %v...", part, before[part], offs[:min(5, len(offs))])
			}
		}
		perP[part] = len(offs)
	}
	return perP, nil
}

func min(a, b int) int {
	if a < b {
		return a
	}
	return b
}

// ------------------------------------------------------------------ consume
type handler struct {
	m, topic, group string
	ev              *events
	client          sarama.Client
}

func (h *handler) Setup(s sarama.ConsumerGroupSession) error {
	h.ev.assign(h.m, s.Claims()[h.topic], s.GenerationID())
	return nil
}

func (h *handler) Cleanup(s sarama.ConsumerGroupSession) error {
	h.ev.revoke(h.m)
	return nil
}

// commit sends a synchronous OffsetCommit for one partition with the session's generation.
func (h *handler) commit(s sarama.ConsumerGroupSession, p int32, next int64) error {
	coord, err := h.client.Coordinator(h.group)
	if err != nil {
		return fmt.Errorf("coordinator: %v", err)
	}
	// v1, exactly what sarama's own offset manager sends with the default
	// Consumer.Offsets.Retention of 0 (Kafka 3.9 and Strom accept v0-v9).
	req := &sarama.OffsetCommitRequest{
		Version:                 1,
		ConsumerGroup:           h.group,
		ConsumerGroupGeneration: s.GenerationID(),
		ConsumerID:              s.MemberID(),
	}
	req.AddBlock(h.topic, p, next, sarama.ReceiveTime, "")
	resp, err := coord.CommitOffset(req)
	if err != nil {
		return err
	}
	if kerr, ok := resp.Errors[h.topic][p]; !ok {
		return fmt.Errorf("OffsetCommit response without partition %d", p)
	} else if kerr != sarama.ErrNoError {
		return kerr
	}
	return nil
}

func (h *handler) ConsumeClaim(s sarama.ConsumerGroupSession, claim sarama.ConsumerGroupClaim) error {
	msgs := claim.Messages()
	for {
		var batch []*sarama.ConsumerMessage
		select {
		case msg, ok := <-msgs:
			if !ok {
				return nil
			}
			batch = append(batch, msg)
		case <-s.Context().Done():
			return nil
		}
	more:
		for len(batch) < maxBatch {
			select {
			case msg, ok := <-msgs:
				if !ok {
					break more
				}
				batch = append(batch, msg)
			default:
				break more
			}
		}
		var next int64 = -1
		for _, msg := range batch {
			h.ev.rec(h.m, msg.Partition, msg.Offset, indexOfKey(msg.Key))
			time.Sleep(processDelay)
			next = msg.Offset + 1
		}
		err := h.commit(s, claim.Partition(), next)
		h.ev.commit(h.m, claim.Partition(), next, err)
		if err != nil {
			return nil // the session is ending (rebalance); the new owner resumes from the committed offset
		}
	}
}

type member struct {
	name   string
	cancel context.CancelFunc
	done   chan struct{}
}

func startMember(boot, topic, group, name string, ev *events) (*member, error) {
	c := config("compat-sarama-" + name)
	c.Consumer.Offsets.Initial = sarama.OffsetOldest
	c.Consumer.Return.Errors = true
	c.Consumer.Group.Session.Timeout = 10 * time.Second
	c.Consumer.Group.Heartbeat.Interval = 500 * time.Millisecond
	c.Consumer.Group.Rebalance.Timeout = 30 * time.Second
	c.Consumer.Group.Rebalance.Retry.Backoff = 500 * time.Millisecond
	c.Consumer.MaxWaitTime = 200 * time.Millisecond
	cl, err := sarama.NewClient([]string{boot}, c)
	if err != nil {
		return nil, fmt.Errorf("%s: NewClient: %v", name, err)
	}
	g, err := sarama.NewConsumerGroupFromClient(group, cl)
	if err != nil {
		cl.Close()
		return nil, fmt.Errorf("%s: NewConsumerGroupFromClient: %v", name, err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	mem := &member{name: name, cancel: cancel, done: make(chan struct{})}
	go func() {
		for err := range g.Errors() {
			fmt.Fprintf(os.Stderr, "%s %s: group error: %v\n", client, name, err)
		}
	}()
	go func() {
		defer close(mem.done)
		h := &handler{m: name, topic: topic, group: group, ev: ev, client: cl}
		for ctx.Err() == nil {
			if err := g.Consume(ctx, []string{topic}, h); err != nil {
				ev.error(fmt.Sprintf("%s: Consume: %v", name, err))
				break
			}
		}
		ev.revoke(name)                   // processes nothing from here on
		if err := g.Close(); err != nil { // LeaveGroup
			ev.error(fmt.Sprintf("%s: close: %v", name, err))
		}
		cl.Close()
	}()
	return mem, nil
}

func consume(boot, topic string, names []string, keys map[int]bool) error {
	ev := newEvents(os.Getenv("COMPAT_EVENTS"))
	group := topic + "-g"
	ends, err := endOffsets(boot, topic)
	if err != nil {
		return err
	}
	for p := int32(0); p < partitions; p++ {
		ev.write(fmt.Sprintf("end %d %d", p, ends[p]))
	}
	var started []*member
	func() {
		for k, name := range names {
			t0 := time.Now()
			mem, err := startMember(boot, topic, group, name, ev)
			if err != nil {
				ev.error(err.Error())
				return
			}
			started = append(started, mem)
			for !ev.stageReached(k+1) && time.Since(t0) < stageTimeout {
				time.Sleep(50 * time.Millisecond)
			}
			if !ev.stageReached(k + 1) {
				ev.error(fmt.Sprintf("stage %d (%d members owning disjoint partitions covering all %d) not reached within %v; ownership %s",
					k+1, k+1, partitions, stageTimeout, ev.ownership()))
				return
			}
			ev.write(fmt.Sprintf("stage %d", k+1))
			fmt.Fprintf(os.Stderr, "%s: stage %d reached %.1fs after starting %s\n", client, k+1, time.Since(t0).Seconds(), name)
		}
		deadline := time.Now().Add(consumeTimeout)
		for !ev.done(keys, ends) {
			if time.Now().After(deadline) {
				ev.mu.Lock()
				missing := 0
				for i := range keys {
					if !ev.seen[i] {
						missing++
					}
				}
				committed := fmt.Sprint(ev.committed)
				ev.mu.Unlock()
				ev.error(fmt.Sprintf("not everything consumed and committed within %v of the last rebalance: %d of %d records missing, committed %s, end offsets %v",
					consumeTimeout, missing, len(keys), committed, ends))
				return
			}
			time.Sleep(50 * time.Millisecond)
		}
	}()
	for i := len(started) - 1; i >= 0; i-- {
		started[i].cancel()
		select {
		case <-started[i].done:
		case <-time.After(20 * time.Second):
			ev.error("member " + started[i].name + " did not close within 20s")
		}
	}
	final, err := committedOffsets(boot, topic, group)
	if err != nil {
		return err
	}
	for p := int32(0); p < partitions; p++ {
		ev.write(fmt.Sprintf("final %d %d", p, final[p]))
	}
	return nil
}

func keyRange(from, count int) map[int]bool {
	out := map[int]bool{}
	for i := from; i < from+count; i++ {
		out[i] = true
	}
	return out
}

func main() {
	modes := map[string]bool{"groups-produce": true, "groups-consume": true, "groups-resume": true}
	if len(os.Args) != 4 || !modes[os.Args[3]] {
		fmt.Fprintf(os.Stderr, "usage: %s <bootstrap host:port> <topic> groups-produce|groups-consume|groups-resume\n", os.Args[0])
		os.Exit(2)
	}
	if os.Getenv("COMPAT_SARAMA_LOG") != "" {
		sarama.Logger = log.New(os.Stderr, "[sarama] ", log.LstdFlags|log.Lmicroseconds)
	}
	boot, topic, mode := os.Args[1], os.Args[2], os.Args[3]
	var err error
	switch mode {
	case "groups-produce":
		if err = createTopic(boot, topic); err == nil {
			var perP map[int32]int
			if perP, err = produce(boot, topic, 0, nFirst); err == nil {
				if len(perP) != partitions {
					err = fmt.Errorf("records landed in partitions %v only", perP)
				} else {
					fmt.Printf("%s %s OK %d records, per partition %v\n", client, mode, nFirst, perP)
				}
			}
		}
	case "groups-consume":
		err = consume(boot, topic, []string{"c1", "c2", "c3"}, keyRange(0, nFirst))
	default:
		if _, err = produce(boot, topic, nFirst, nMore); err == nil {
			err = consume(boot, topic, []string{"r1"}, keyRange(nFirst, nMore))
		}
	}
	if err != nil {
		fmt.Printf("%s %s FAIL %s\n", client, mode, oneLine(err.Error()))
		os.Exit(1)
	}
}
