//! The error-code table users of R's mirai know: task outcomes such as "timed out" (5) or
//! "operation canceled" (20) keep NNG's numbering so bindings can hand them over unchanged.

use core::fmt;

/// An NNG-numbered error code. Bindings surface these as `errorValue`s.
#[repr(u8)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ErrorCode {
    Interrupted = 1,
    OutOfMemory = 2,
    InvalidArgument = 3,
    ResourceBusy = 4,
    TimedOut = 5,
    ConnectionRefused = 6,
    ObjectClosed = 7,
    TryAgain = 8,
    NotSupported = 9,
    AddressInUse = 10,
    IncorrectState = 11,
    EntryNotFound = 12,
    ProtocolError = 13,
    DestinationUnreachable = 14,
    AddressInvalid = 15,
    PermissionDenied = 16,
    MessageTooLarge = 17,
    ConnectionAborted = 18,
    ConnectionReset = 19,
    Canceled = 20,
    OutOfFiles = 21,
    OutOfSpace = 22,
    ResourceExists = 23,
    ReadOnly = 24,
    WriteOnly = 25,
    Cryptographic = 26,
    AuthenticationFailed = 27,
    OptionRequiresArgument = 28,
    AmbiguousOption = 29,
    IncorrectType = 30,
    ConnectionShutdown = 31,
}

const ALL: [ErrorCode; 31] = {
    use ErrorCode::*;
    [
        Interrupted,
        OutOfMemory,
        InvalidArgument,
        ResourceBusy,
        TimedOut,
        ConnectionRefused,
        ObjectClosed,
        TryAgain,
        NotSupported,
        AddressInUse,
        IncorrectState,
        EntryNotFound,
        ProtocolError,
        DestinationUnreachable,
        AddressInvalid,
        PermissionDenied,
        MessageTooLarge,
        ConnectionAborted,
        ConnectionReset,
        Canceled,
        OutOfFiles,
        OutOfSpace,
        ResourceExists,
        ReadOnly,
        WriteOnly,
        Cryptographic,
        AuthenticationFailed,
        OptionRequiresArgument,
        AmbiguousOption,
        IncorrectType,
        ConnectionShutdown,
    ]
};

impl ErrorCode {
    /// Every code, in numeric order.
    pub const ALL: [ErrorCode; 31] = ALL;

    /// The code for a number, if the table has one.
    pub fn from_code(code: u32) -> Option<Self> {
        let index = usize::try_from(code).ok()?.checked_sub(1)?;
        ALL.get(index).copied()
    }

    /// The number, as users of R's mirai see it.
    pub fn code(self) -> u8 {
        self as u8
    }

    /// NNG's short text for the code, e.g. "Timed out".
    pub fn message(self) -> &'static str {
        use ErrorCode::*;
        match self {
            Interrupted => "Interrupted",
            OutOfMemory => "Out of memory",
            InvalidArgument => "Invalid argument",
            ResourceBusy => "Resource busy",
            TimedOut => "Timed out",
            ConnectionRefused => "Connection refused",
            ObjectClosed => "Object closed",
            TryAgain => "Try again",
            NotSupported => "Not supported",
            AddressInUse => "Address in use",
            IncorrectState => "Incorrect state",
            EntryNotFound => "Entry not found",
            ProtocolError => "Protocol error",
            DestinationUnreachable => "Destination unreachable",
            AddressInvalid => "Address invalid",
            PermissionDenied => "Permission denied",
            MessageTooLarge => "Message too large",
            ConnectionAborted => "Connection aborted",
            ConnectionReset => "Connection reset",
            Canceled => "Operation canceled",
            OutOfFiles => "Out of files",
            OutOfSpace => "Out of space",
            ResourceExists => "Resource already exists",
            ReadOnly => "Read only resource",
            WriteOnly => "Write only resource",
            Cryptographic => "Cryptographic error",
            AuthenticationFailed => "Peer could not be authenticated",
            OptionRequiresArgument => "Option requires argument",
            AmbiguousOption => "Ambiguous option",
            IncorrectType => "Incorrect type",
            ConnectionShutdown => "Connection shutdown",
        }
    }
}

impl fmt::Display for ErrorCode {
    /// Formats as R's mirai prints an errorValue: `5 | Timed out`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} | {}", self.code(), self.message())
    }
}
