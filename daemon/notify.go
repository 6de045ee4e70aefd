package daemon

import (
	"net"
	"os"
)

// notify sends state to the service manager (systemd's sd_notify protocol: one
// datagram of newline-separated assignments on the unix socket in $NOTIFY_SOCKET, "@"
// for the abstract namespace). Without $NOTIFY_SOCKET it does nothing.
func notify(state string) error {
	addr := os.Getenv("NOTIFY_SOCKET")
	if addr == "" {
		return nil
	}
	if addr[0] == '@' {
		addr = "\x00" + addr[1:]
	}
	conn, err := net.DialUnix("unixgram", nil, &net.UnixAddr{Name: addr, Net: "unixgram"})
	if err != nil {
		return err
	}
	defer conn.Close()
	_, err = conn.Write([]byte(state))
	return err
}
