package chaos

import (
	"bufio"
	"bytes"
	"fmt"
	"os"
	"strconv"
	"strings"
)

// AbortsOnClose returns the kernel's count of TCP connections closed while
// data they had received was still unread (TcpExt TCPAbortOnClose in
// /proc/net/netstat, for the network namespace of the calling process).
//
// A test that drops a connection uses it to tell, without a race, whether
// an answer had reached the client's socket before the client let go: read
// it, close, read it again. Linux only.
func AbortsOnClose() (int64, error) {
	b, err := os.ReadFile("/proc/net/netstat")
	if err != nil {
		return 0, err
	}
	sc := bufio.NewScanner(bytes.NewReader(b))
	var names []string
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) == 0 || fields[0] != "TcpExt:" {
			continue
		}
		if names == nil {
			names = fields
			continue
		}
		for i, name := range names {
			if name == "TCPAbortOnClose" && i < len(fields) {
				return strconv.ParseInt(fields[i], 10, 64)
			}
		}
		break
	}
	return 0, fmt.Errorf("chaos: no TcpExt TCPAbortOnClose in /proc/net/netstat")
}
