//! A scripted transport for unit tests: each step names the CDB prefix it expects and what the device
//! answers (data in, status, sense). A CDB that does not match, or one past the end of the script,
//! panics with the CDB, so a test shows exactly which command went wrong.

use std::collections::VecDeque;
use std::time::Duration;

use scsi::{Completion, DataDir, DeviceType, Inquiry, Sense, Transport, TransportError};

use super::Drive;

#[derive(Debug, Clone)]
pub struct Step {
    /// The CDB must start with these bytes.
    pub cdb: Vec<u8>,
    pub data_in: Vec<u8>,
    pub completion: Completion,
}

impl Step {
    pub fn ok(cdb: &[u8]) -> Step {
        Step {
            cdb: cdb.to_vec(),
            data_in: Vec::new(),
            completion: Completion::good(0),
        }
    }

    /// GOOD with `data` as data in (transferred = its length).
    pub fn data(cdb: &[u8], data: impl Into<Vec<u8>>) -> Step {
        let data_in = data.into();
        Step {
            cdb: cdb.to_vec(),
            completion: Completion::good(data_in.len()),
            data_in,
        }
    }

    /// CHECK CONDITION with fixed-format sense, nothing transferred.
    pub fn sense(cdb: &[u8], sense: Sense) -> Step {
        Step {
            cdb: cdb.to_vec(),
            data_in: Vec::new(),
            completion: Completion::check_condition(sense.encode_fixed(), 0),
        }
    }

    /// CHECK CONDITION after `data` was transferred.
    pub fn sense_with_data(cdb: &[u8], sense: Sense, data: impl Into<Vec<u8>>) -> Step {
        let data_in = data.into();
        Step {
            cdb: cdb.to_vec(),
            completion: Completion::check_condition(sense.encode_fixed(), data_in.len()),
            data_in,
        }
    }
}

pub struct Script {
    steps: VecDeque<Step>,
    /// Data-out buffers sent, in order.
    pub sent: Vec<Vec<u8>>,
    /// Every CDB sent, in order.
    pub cdbs: Vec<Vec<u8>>,
}

impl Script {
    pub fn new(steps: Vec<Step>) -> Script {
        Script {
            steps: steps.into(),
            sent: Vec::new(),
            cdbs: Vec::new(),
        }
    }

    pub fn done(&self) -> bool {
        self.steps.is_empty()
    }

    /// INQUIRY (an IBM LTO-6 drive) and its serial number page.
    pub fn open_steps() -> Vec<Step> {
        let inq = Inquiry {
            device_type: DeviceType::Tape,
            removable: true,
            vendor: "IBM".into(),
            product: "ULT3580-TD6".into(),
            revision: "J451".into(),
        };
        vec![
            Step::data(&[0x12, 0], inq.encode()),
            Step::data(
                &[0x12, 1, 0x80],
                scsi::inquiry::encode_serial_vpd(1, "10WT000123"),
            ),
        ]
    }

    /// A drive opened over a script of `steps` (after the opening INQUIRYs).
    pub fn drive(steps: Vec<Step>) -> Drive<Script> {
        let mut all = Script::open_steps();
        all.extend(steps);
        Drive::new(Script::new(all)).expect("scripted drive opens")
    }
}

impl Transport for Script {
    fn execute(
        &mut self,
        cdb: &[u8],
        data: DataDir<'_>,
        _timeout: Duration,
    ) -> Result<Completion, TransportError> {
        let step = self
            .steps
            .pop_front()
            .unwrap_or_else(|| panic!("unexpected CDB {cdb:02x?}: the script is over"));
        assert!(
            cdb.starts_with(&step.cdb),
            "CDB {cdb:02x?} does not match the script's {:02x?}",
            step.cdb
        );
        self.cdbs.push(cdb.to_vec());
        let mut completion = step.completion;
        match data {
            DataDir::In(buf) => {
                let n = step.data_in.len().min(buf.len());
                buf[..n].copy_from_slice(&step.data_in[..n]);
                completion.transferred = completion.transferred.min(buf.len());
            }
            DataDir::Out(buf) => self.sent.push(buf.to_vec()),
            DataDir::None => {}
        }
        Ok(completion)
    }

    fn describe(&self) -> String {
        "script".into()
    }
}
