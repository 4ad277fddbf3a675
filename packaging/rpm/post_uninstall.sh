# tokend %postun, as Fedora's %systemd_postun_with_restart: reload systemd and, on
# upgrade, restart the service only if it runs. RPM has no purge: on erase the state in
# /var/lib/tokend and the tokend user stay (docs/PACKAGING.md).
if [ -d /run/systemd/system ]; then
    systemctl daemon-reload || :
    if [ "$1" -ge 1 ]; then
        systemctl try-restart tokend.service >/dev/null 2>&1 || :
    fi
fi
