# tokend %post: create /etc/tokend, /var/lib/tokend and /run/tokend with their owners,
# then do what Fedora's %systemd_post does: apply the preset on a first install (the
# default preset leaves a new service disabled), never start it. The shipped config
# names a secret that is not set yet.
systemd-tmpfiles --create tokend.conf || :
if [ -d /run/systemd/system ]; then
    systemctl daemon-reload || :
fi
if [ "$1" -eq 1 ]; then
    systemctl --no-reload preset tokend.service >/dev/null 2>&1 || :
    echo "tokend: edit /etc/tokend/tokend.toml and provide its secrets, then: systemctl enable --now tokend"
fi
