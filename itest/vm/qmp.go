package vm

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"sync"
	"time"
)

// Event is a QMP event QEMU sent (WATCHDOG, RESET, SHUTDOWN, …) and when
// it came, from the VM's start.
type Event struct {
	Name string          `json:"event"`
	Data json.RawMessage `json:"data"`
	At   time.Duration   `json:"-"`
}

func (e Event) String() string { return fmt.Sprintf("%s %s at %.2fs", e.Name, e.Data, e.At.Seconds()) }

// qmpEvents are the events of a QEMU started at start, as its QMP socket
// (-qmp unix:…,server=on,wait=off) gives them: the one way to tell a
// guest's reset by its watchdog from a reboot once -no-reboot turns both
// into QEMU's end with status 0.
type qmpEvents struct {
	start time.Time

	mu     sync.Mutex
	events []Event
}

// listen records QEMU's events until it ends.
func (q *qmpEvents) listen(sock string) {
	var c net.Conn
	for i := 0; i < 400; i++ { // QEMU makes the socket as it starts: 10 s at most
		var err error
		if c, err = net.Dial("unix", sock); err == nil {
			break
		}
		time.Sleep(25 * time.Millisecond)
	}
	if c == nil {
		return
	}
	defer c.Close()
	r := bufio.NewReader(c)
	if _, err := r.ReadBytes('\n'); err != nil { // the greeting
		return
	}
	if _, err := io.WriteString(c, `{"execute":"qmp_capabilities"}`+"\n"); err != nil {
		return
	}
	for {
		line, err := r.ReadBytes('\n')
		if err != nil {
			return
		}
		var e Event
		if json.Unmarshal(line, &e) != nil || e.Name == "" {
			continue
		}
		e.At = time.Since(q.start)
		q.mu.Lock()
		q.events = append(q.events, e)
		q.mu.Unlock()
	}
}

// Events are the QMP events so far.
func (q *qmpEvents) Events() []Event {
	q.mu.Lock()
	defer q.mu.Unlock()
	return append([]Event(nil), q.events...)
}

// Event is the first QMP event called name (WATCHDOG: the watchdog
// fired), if one came.
func (q *qmpEvents) Event(name string) (Event, bool) {
	for _, e := range q.Events() {
		if e.Name == name {
			return e, true
		}
	}
	return Event{}, false
}

// Started is when QEMU started: the events' At count from it.
func (q *qmpEvents) Started() time.Time { return q.start }
