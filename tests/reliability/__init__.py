"""The reliability suite: crashes, load, failing disks and hostile input.

Every test drives the real ``appliance serve`` over loopback only; every
loop is bounded in count and time; every process started is killed in a
``finally``. The long parts (the crash loop, two minutes of load) are marked
``slow``; the whole suite takes about five minutes on two cores.
"""
