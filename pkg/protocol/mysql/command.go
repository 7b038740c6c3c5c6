package mysql

// Command bytes: the first byte of every packet a client sends after the
// handshake.
const (
	ComSleep            byte = 0x00
	ComQuit             byte = 0x01
	ComInitDB           byte = 0x02
	ComQuery            byte = 0x03
	ComFieldList        byte = 0x04
	ComCreateDB         byte = 0x05
	ComDropDB           byte = 0x06
	ComRefresh          byte = 0x07
	ComShutdown         byte = 0x08
	ComStatistics       byte = 0x09
	ComProcessInfo      byte = 0x0a
	ComConnect          byte = 0x0b
	ComProcessKill      byte = 0x0c
	ComDebug            byte = 0x0d
	ComPing             byte = 0x0e
	ComTime             byte = 0x0f
	ComDelayedInsert    byte = 0x10
	ComChangeUser       byte = 0x11
	ComBinlogDump       byte = 0x12
	ComTableDump        byte = 0x13
	ComConnectOut       byte = 0x14
	ComRegisterSlave    byte = 0x15
	ComStmtPrepare      byte = 0x16
	ComStmtExecute      byte = 0x17
	ComStmtSendLongData byte = 0x18
	ComStmtClose        byte = 0x19
	ComStmtReset        byte = 0x1a
	ComSetOption        byte = 0x1b
	ComStmtFetch        byte = 0x1c
	ComDaemon           byte = 0x1d
	ComBinlogDumpGTID   byte = 0x1e
	ComResetConnection  byte = 0x1f
	ComStmtBulkExecute  byte = 0xfa // MariaDB
)

// CommandName is the command's name for logs and errors.
func CommandName(c byte) string {
	names := map[byte]string{
		ComSleep: "COM_SLEEP", ComQuit: "COM_QUIT", ComInitDB: "COM_INIT_DB", ComQuery: "COM_QUERY",
		ComFieldList: "COM_FIELD_LIST", ComCreateDB: "COM_CREATE_DB", ComDropDB: "COM_DROP_DB", ComRefresh: "COM_REFRESH",
		ComShutdown: "COM_SHUTDOWN", ComStatistics: "COM_STATISTICS", ComProcessInfo: "COM_PROCESS_INFO",
		ComConnect: "COM_CONNECT", ComProcessKill: "COM_PROCESS_KILL", ComDebug: "COM_DEBUG", ComPing: "COM_PING",
		ComTime: "COM_TIME", ComDelayedInsert: "COM_DELAYED_INSERT", ComChangeUser: "COM_CHANGE_USER",
		ComBinlogDump: "COM_BINLOG_DUMP", ComTableDump: "COM_TABLE_DUMP", ComConnectOut: "COM_CONNECT_OUT",
		ComRegisterSlave: "COM_REGISTER_SLAVE", ComStmtPrepare: "COM_STMT_PREPARE", ComStmtExecute: "COM_STMT_EXECUTE",
		ComStmtSendLongData: "COM_STMT_SEND_LONG_DATA", ComStmtClose: "COM_STMT_CLOSE", ComStmtReset: "COM_STMT_RESET",
		ComSetOption: "COM_SET_OPTION", ComStmtFetch: "COM_STMT_FETCH", ComDaemon: "COM_DAEMON",
		ComBinlogDumpGTID: "COM_BINLOG_DUMP_GTID", ComResetConnection: "COM_RESET_CONNECTION",
		ComStmtBulkExecute: "COM_STMT_BULK_EXECUTE",
	}
	if n, ok := names[c]; ok {
		return n
	}
	return "command 0x" + string("0123456789abcdef"[c>>4]) + string("0123456789abcdef"[c&15])
}
