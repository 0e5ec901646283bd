package schedule_test

func childMain() bool { return false }
