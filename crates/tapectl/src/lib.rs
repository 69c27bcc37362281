//! Tape library control: the LTO drive and SCSI medium changer command sets over any [`scsi::Transport`].
