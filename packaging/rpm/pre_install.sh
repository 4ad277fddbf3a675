# tokend %pre: create the tokend user before the files are unpacked, so that
# /etc/tokend/tokend.toml gets its group (root:tokend 0640). The line is the one in
# /usr/lib/sysusers.d/tokend.conf (systemd/tokend.sysusers), which does not exist yet.
echo 'u tokend - "tokend token daemon" /var/lib/tokend /usr/sbin/nologin' |
    systemd-sysusers --replace=/usr/lib/sysusers.d/tokend.conf -
