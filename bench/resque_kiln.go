package main

import "log"

func runResqueKiln() resqueResult {
	log.Fatal("kiln's Resque worker is not in this build yet: run with -only goworker")
	return resqueResult{}
}
