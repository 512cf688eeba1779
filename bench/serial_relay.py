"""Runs on the KVM host (bench/attach_bench.py copies it there): a terminal
on a guest serial port that qemu offers as a unix socket - this terminal
in raw mode, bytes both ways, until either side closes. Sends one carriage
return first so the shell there prints its prompt."""
import os
import select
import socket
import sys
import tty

s = socket.socket(socket.AF_UNIX)
s.connect(sys.argv[1])
if os.isatty(0):
    tty.setraw(0)
s.sendall(b"\r")
while True:
    r, _, _ = select.select([0, s], [], [])
    if 0 in r:
        b = os.read(0, 4096)
        if not b:
            break
        s.sendall(b)
    if s in r:
        b = s.recv(4096)
        if not b:
            break
        os.write(1, b)
