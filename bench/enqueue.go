package main

import (
	"context"
	"fmt"
	"log"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hibiken/asynq"
	"github.com/redis/go-redis/v9"

	"github.com/kilnhq/kiln"
	"github.com/kilnhq/kiln/store/redisstore"
)

// enqueueRow is one measured round of single enqueues of one system.
type enqueueRow struct {
	name  string
	rate  float64 // tasks/s
	cost  redisCost
	calls float64 // Redis commands per task, those inside scripts included
	load  string
}

// runEnqueueOnly measures single enqueues (one task per call, no batch)
// from -callers goroutines, kiln and asynq alternately, -rounds times, and
// prints per round tasks/s, Redis commands per task (INFO commandstats,
// commands inside scripts included), Redis CPU and Go CPU per task.
func runEnqueueOnly() {
	var rows []enqueueRow
	for round := range *rounds {
		if *only == "" || *only == "kiln" {
			rows = append(rows, enqueueKiln(round))
		}
		if *only == "" || *only == "asynq" {
			rows = append(rows, enqueueAsynq(round))
		}
	}
	fmt.Printf("\nsingle enqueues: %d tasks per round, one per call, %d callers\n\n", *tasks, *callers)
	fmt.Println("| system | tasks/s | Redis commands/task | scripts µs/task | Redis process CPU µs/task | Go process CPU µs/task | load average |")
	fmt.Println("|---|---:|---:|---:|---:|---:|---|")
	for _, r := range rows {
		fmt.Printf("| %s | %.0f | %.2f | %.2f | %.2f | %.2f | %s |\n", r.name, r.rate, r.calls, r.cost.scriptUS, r.cost.processUS, r.cost.goUS, r.load)
	}
}

// parallel calls enqueue n times from -callers goroutines.
func parallel(n int, enqueue func()) {
	var next atomic.Int64
	var wg sync.WaitGroup
	for range *callers {
		wg.Go(func() {
			for next.Add(1) <= int64(n) {
				enqueue()
			}
		})
	}
	wg.Wait()
}

func enqueueKiln(round int) enqueueRow {
	ctx := context.Background()
	prefix := "kbench-" + token()
	defer deleteKeys(*redisURL, "{"+prefix+"*", prefix+"*")
	o, err := redis.ParseURL(*redisURL)
	if err != nil {
		log.Fatal(err)
	}
	// As many connections as callers, like asynq's pool below.
	o.PoolSize = 2 * *callers
	o.MaxRetries = -1
	rdb := redis.NewClient(o)
	defer func() { _ = rdb.Close() }()
	s, err := redisstore.New(ctx, rdb, &redisstore.Config{Prefix: prefix})
	if err != nil {
		log.Fatalf("kiln: open: %v", err)
	}
	defer func() { _ = s.Close() }()
	c := must(kiln.NewClient(s, nil))
	if _, err := c.Enqueue(ctx, "noop", nil, nil); err != nil { // registers the namespace
		log.Fatalf("kiln: enqueue: %v", err)
	}
	before, beforeCalls := sampleRedis(*redisURL), commandCalls(*redisURL)
	start := time.Now()
	parallel(*tasks, func() {
		if _, err := c.Enqueue(ctx, "noop", payload(), nil); err != nil {
			log.Fatalf("kiln: enqueue: %v", err)
		}
	})
	r := enqueueRow{name: fmt.Sprintf("kiln (Redis store), round %d", round+1), rate: float64(*tasks) / time.Since(start).Seconds()}
	r.cost = sampleRedis(*redisURL).since(before, *tasks)
	r.calls = float64(commandCalls(*redisURL)-beforeCalls) / float64(*tasks)
	r.load = loadAverage()
	log.Printf("kiln: single enqueue %.0f tasks/s", r.rate)
	return r
}

func enqueueAsynq(round int) enqueueRow {
	o, err := redis.ParseURL(*redisURL)
	if err != nil {
		log.Fatal(err)
	}
	opt := asynq.RedisClientOpt{Addr: o.Addr, Username: o.Username, Password: o.Password, DB: *asynqDB, PoolSize: 2 * *callers}
	asynqURL := fmt.Sprintf("redis://%s/%d", o.Addr, *asynqDB)
	clean := func() { deleteKeys(asynqURL, "asynq:*") }
	clean()
	defer clean()
	client := asynq.NewClient(opt)
	defer func() { _ = client.Close() }()
	if _, err := client.Enqueue(asynq.NewTask("noop", nil)); err != nil { // registers the queue
		log.Fatalf("asynq: enqueue: %v", err)
	}
	before, beforeCalls := sampleRedis(*redisURL), commandCalls(*redisURL)
	start := time.Now()
	parallel(*tasks, func() {
		if _, err := client.Enqueue(asynq.NewTask("noop", payload())); err != nil {
			log.Fatalf("asynq: enqueue: %v", err)
		}
	})
	r := enqueueRow{name: fmt.Sprintf("asynq v0.26.0, round %d", round+1), rate: float64(*tasks) / time.Since(start).Seconds()}
	r.cost = sampleRedis(*redisURL).since(before, *tasks)
	r.calls = float64(commandCalls(*redisURL)-beforeCalls) / float64(*tasks)
	r.load = loadAverage()
	log.Printf("asynq: single enqueue %.0f tasks/s", r.rate)
	return r
}

// commandCalls is the number of commands the server url has run (INFO
// commandstats, commands called by scripts included; INFO itself not).
func commandCalls(url string) int64 {
	o, err := redis.ParseURL(url)
	if err != nil {
		log.Fatal(err)
	}
	c := redis.NewClient(o)
	defer func() { _ = c.Close() }()
	info, err := c.Info(context.Background(), "commandstats").Result()
	if err != nil {
		log.Fatalf("INFO: %v", err)
	}
	var n int64
	for _, line := range strings.Split(info, "\n") {
		name, rest, ok := strings.Cut(strings.TrimSpace(line), ":")
		if !ok || !strings.HasPrefix(name, "cmdstat_") || name == "cmdstat_info" {
			continue
		}
		calls, _, _ := strings.Cut(strings.TrimPrefix(rest, "calls="), ",")
		var v int64
		_, _ = fmt.Sscan(calls, &v)
		n += v
	}
	return n
}

// loadAverage is the 1, 5 and 15 minute load average of the machine.
func loadAverage() string {
	raw, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return "unknown"
	}
	return strings.Join(strings.Fields(string(raw))[:3], " ")
}
